# need_pkgs.sh — sourced by the test and benchmark scripts: `need_pkgs WHO PKG...` installs whichever Debian packages are missing.
need_pkgs() {
    local who=$1 p sudo=""
    local missing=()
    shift
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "$who: installing ${missing[*]}"
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null &&
        return 0
    echo "$who: apt-get install failed"
    return 1
}
