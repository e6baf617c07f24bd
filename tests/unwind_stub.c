/* A libunwind.so.8 without libunwind's functions: put first on LD_LIBRARY_PATH, it makes the heap profiler fall back to glibc's backtrace (test prof-exact-backtrace). */
int hakmem_test_unwind_stub;
