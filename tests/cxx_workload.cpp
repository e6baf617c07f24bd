// A C++ workload (new/delete, std::map<std::string>, std::vector growth, 4 std::threads) printing a deterministic checksum.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#ifdef HAKMEM_TEST_LINKED
#include "hakmem.h"
#endif

namespace {

std::uint64_t mix(std::uint64_t h, std::uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h;
}

struct Node {
    std::string name;
    std::vector<int> data;
    std::unique_ptr<Node> next;
};

// Everything here is a pure function of `seed`, so the same checksum comes
// out whichever allocator serves it and however the threads interleave.
std::uint64_t work(unsigned seed)
{
    std::uint64_t h = seed;
    std::map<std::string, std::vector<std::string>> index;
    unsigned s = seed;
    for (int i = 0; i < 20000; i++) {
        s = s * 1103515245u + 12345u;
        std::string key = "k" + std::to_string(s % 997);
        std::string val(1 + s % 200, static_cast<char>('a' + s % 26));
        index[key].push_back(std::move(val));
    }
    for (const auto &kv : index) {
        h = mix(h, kv.first.size());
        for (const auto &v : kv.second) h = mix(h, v.size() * 31 + static_cast<unsigned char>(v[0]));
    }

    std::vector<std::uint64_t> grow;
    for (std::uint64_t i = 0; i < 300000; i++) grow.push_back(i * i);
    h = mix(h, grow[grow.size() / 3]);
    grow.resize(10);
    grow.shrink_to_fit();
    h = mix(h, grow.capacity());

    std::unique_ptr<Node> head;
    for (int i = 0; i < 2000; i++) {
        auto n = std::make_unique<Node>();
        n->name = std::string(i % 50 + 1, 'x');
        n->data.assign(static_cast<std::size_t>(i % 300), i);
        n->next = std::move(head);
        head = std::move(n);
    }
    for (Node *n = head.get(); n; n = n->next.get()) h = mix(h, n->name.size() + n->data.size());
    // Unlink iteratively so destruction does not recurse 2000 deep.
    while (head) head = std::move(head->next);

    char *arrays[100];
    for (int i = 0; i < 100; i++) {
        arrays[i] = new char[static_cast<std::size_t>(i) * 1000 + 1];
        std::memset(arrays[i], i, static_cast<std::size_t>(i) * 1000 + 1);
    }
    for (int i = 0; i < 100; i++) {
        h = mix(h, static_cast<unsigned char>(arrays[i][i * 1000]));
        delete[] arrays[i];
    }
    return h;
}

// Returns false when operator new is provably not served by hakmem although
// hakmem is the process's malloc.
bool new_reaches_hakmem()
{
    using usable_fn = std::size_t (*)(void *);
    usable_fn usable = nullptr;
#if defined(HAKMEM_TEST_LINKED) && defined(HAKMEM_TEST_OVERRIDE)
    usable = hak_malloc_usable_size;
#elif !defined(HAKMEM_TEST_LINKED)
    // Built without hakmem: only when LD_PRELOAD brought it in is there a
    // hak_malloc_usable_size to find, and then new must go through it.
    usable = reinterpret_cast<usable_fn>(dlsym(RTLD_DEFAULT, "hak_malloc_usable_size"));
#endif
    if (!usable) return true;
    char *p = new char[100];
    bool ok = usable(p) >= 100; // aborts inside hakmem if p is foreign
    delete[] p;
    return ok;
}

} // namespace

int main()
{
    if (!new_reaches_hakmem()) {
        std::fprintf(stderr, "operator new did not reach hakmem\n");
        return 3;
    }
    std::uint64_t results[4] = {};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 4; t++) threads.emplace_back([t, &results] { results[t] = work(t + 1); });
    for (auto &t : threads) t.join();
    std::uint64_t total = 0;
    for (unsigned t = 0; t < 4; t++) {
        // Each thread's result must equal the same work done on the main
        // thread: a corrupted container would change it.
        if (results[t] != work(t + 1)) {
            std::fprintf(stderr, "thread %u result differs from sequential run\n", t);
            return 1;
        }
        total = mix(total, results[t]);
    }
    std::printf("cxx checksum %016llx\n", static_cast<unsigned long long>(total));
    return 0;
}
