#!/usr/bin/env bash
# The system test: remixd's .deb installed, as a new user would, into a minimal Debian 12
# booted with systemd-nspawn, then driven and checked from outside. Prints PASS or FAIL per
# check and exits 1 when any check fails. Run by .ci/run as root.
#
#   sudo tests/system/boot.sh          (REMIXD_DEB=path.deb: use that package, else build it)
#
# The Debian tree (debootstrap --variant=minbase plus systemd) is cached in
# target/system/debian12 and copied fresh for every run (target/system/run). There is no
# machined on the host, so the container is not registered (--register=no --keep-unit) and
# commands go in through nsenter into its PID 1's namespaces. The container has its own
# network namespace (--private-network): the fake API listens on its own loopback. The
# package's dependencies are downloaded before the boot, from the mirror this machine's apt
# uses; inside, apt installs offline.
#
# shellcheck disable=SC2317 # the checks are functions called through check and must
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$PWD"
system_dir="$repo/target/system"
cache="$system_dir/debian12"
tree="$system_dir/run"
# Changing how the tree is made changes this, and the cache is made again.
recipe="bookworm minbase +systemd,systemd-sysv,dbus apt-lists v1"
port=8080
started=$SECONDS
failures=0

say() { printf '%s [%3ds] %s\n' "==" "$((SECONDS - started))" "$*"; }
die() {
    echo "FAIL: $*" >&2
    exit 1
}
check() {
    local name="$1"
    shift
    if "$@"; then
        echo "PASS: $name"
    else
        echo "FAIL: $name"
        failures=$((failures + 1))
    fi
}
# A check the later ones build on: when it fails, the run ends there.
must() {
    check "$@"
    [ "$failures" -eq 0 ] || finish
}

finish() {
    say "done in $((SECONDS - started))s"
    if [ "$failures" -ne 0 ]; then
        echo "$failures check(s) failed; the container's tree is in $tree" >&2
        [ -z "${leader:-}" ] ||
            in_ct journalctl -q -u remixd -u fake-api --no-pager | tail -n 30 >&2 || true
        exit 1
    fi
    echo "all checks passed"
    stop_container
    rm -rf "$tree"
    exit 0
}

# --- what the test needs from the host ----------------------------------------------------

[ "$(id -u)" -eq 0 ] ||
    die "tests/system/boot.sh needs root (debootstrap, systemd-nspawn, nsenter): run it with sudo"

need() {
    local command="$1" package="$2"
    command -v "$command" >/dev/null && return 0
    say "installing $package (for $command)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$package"; }; then
        die "$command is missing and apt-get could not install $package: install it by hand"
    fi
    command -v "$command" >/dev/null || die "$package did not bring $command"
}
need debootstrap debootstrap
need systemd-nspawn systemd-container
need nsenter util-linux
need dpkg-deb dpkg

# The mirror this machine's apt uses (deb822 .sources or one-line .list), else Debian's.
mirror_of() {
    local suffix="$1" fallback="$2" found
    found="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v '^\s*#' |
        grep -oE "https?://[^ ]+/debian${suffix}/?( |\$)" | tr -d ' ' | sed 's#/$##')" || true
    found="${found%%$'\n'*}"
    echo "${found:-$fallback}"
}
mirror="$(mirror_of "" http://deb.debian.org/debian)"
security="$(mirror_of "-security" http://deb.debian.org/debian-security)"

# --- the package and the helper ------------------------------------------------------------

if [ -n "${REMIXD_DEB:-}" ]; then
    deb="$REMIXD_DEB"
else
    say "building the package (.ci/run package)"
    .ci/run package
    deb="$(find target/debian -maxdepth 1 -name 'remixd_*.deb' -printf '%T@ %p\n' |
        sort -n | tail -n 1 | cut -d ' ' -f 2-)"
fi
[ -f "$deb" ] || die "no package at $deb"
say "building the test helper (fake API)"
mkdir -p "$system_dir"
helper="$(cargo test --test system_helper --no-run 2>&1 | tee "$system_dir/helper.log" |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p')" || true
[ -x "$helper" ] || die "the helper did not build: $(cat "$system_dir/helper.log")"

# --- the Debian tree -----------------------------------------------------------------------

if [ "$(cat "$cache/.recipe" 2>/dev/null)" != "$recipe" ]; then
    say "bootstrapping Debian 12 from $mirror into $cache (cached for next time)"
    rm -rf "$cache" "$cache.partial"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm \
        "$cache.partial" "$mirror" >"$system_dir/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $system_dir/debootstrap.log"
    cat >"$cache.partial/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
    chroot "$cache.partial" apt-get update -qq || die "apt-get update in the new tree failed"
    chroot "$cache.partial" apt-get clean
    echo "$recipe" >"$cache.partial/.recipe"
    mv "$cache.partial" "$cache"
fi

say "copying the tree to $tree"
rm -rf "$tree"
cp -a "$cache" "$tree"
stage=/opt/remixd-system-test
mkdir -p "$tree$stage"
cp "$deb" "$tree$stage/remixd.deb"
cp "$helper" "$tree$stage/system_helper"
"$helper" png "$tree$stage/cat.png"
chmod -R a+rX "$tree$stage"

# The dependencies the package declares (ca-certificates first of all) and the tree lacks,
# fetched now while there is a network; a tree whose lists went stale is updated once.
download_dependencies() {
    chroot "$tree" apt-get install -qq --download-only -y "$stage/remixd.deb" >/dev/null
}
say "downloading the package's dependencies"
download_dependencies ||
    { chroot "$tree" apt-get update -qq && download_dependencies; } ||
    die "cannot download the package's dependencies from $mirror"

# --- boot ----------------------------------------------------------------------------------

say "booting the container"
systemd-nspawn -q -D "$tree" -M remixd-system-test -b --register=no --keep-unit \
    --private-network --console=passive >"$system_dir/boot.log" 2>&1 &
nspawn=$!
stop_container() {
    kill -TERM "$nspawn" 2>/dev/null || return 0 # forwarded to the container as a poweroff
    for _ in $(seq 300); do
        kill -0 "$nspawn" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$nspawn" 2>/dev/null || true
}
trap stop_container EXIT

leader=""
for _ in $(seq 100); do
    leader="$(cat /proc/"$nspawn"/task/*/children 2>/dev/null | awk '{print $1}')"
    [ -n "$leader" ] && break
    kill -0 "$nspawn" 2>/dev/null || die "systemd-nspawn exited: $(cat "$system_dir/boot.log")"
    sleep 0.1
done
[ -n "$leader" ] || die "the container's init did not appear"

# A command inside the container: all its namespaces, its own PATH and nothing from ours.
in_ct() {
    nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
# Its manager's socket comes first; until then systemctl has nothing to talk to.
for _ in $(seq 300); do
    in_ct test -S /run/systemd/private 2>/dev/null && break
    kill -0 "$nspawn" 2>/dev/null || die "systemd-nspawn exited: $(cat "$system_dir/boot.log")"
    sleep 0.1
done
state="$(in_ct timeout 120 systemctl is-system-running --wait || true)"
case "$state" in
running) ;;
degraded) in_ct systemctl --failed --no-legend || true ;;
*) die "the container did not boot (state: ${state:-none}); see $system_dir/boot.log" ;;
esac
say "booted ($state)"

# --- install, configure, start -------------------------------------------------------------

install_package() {
    in_ct apt-get install -qq -y "$stage/remixd.deb" >"$system_dir/install.log" 2>&1 ||
        { cat "$system_dir/install.log"; return 1; }
}
must "the package installs with its dependencies (apt, offline)" install_package

accounts_and_folders() {
    in_ct getent passwd remixd >/dev/null && in_ct getent group remix >/dev/null &&
        [ "$(in_ct stat -c '%a %U:%G' /srv/remix/inbox)" = "2770 remixd:remix" ] &&
        [ "$(in_ct stat -c '%a %U:%G' /etc/remixd/config.yaml)" = "640 root:remix" ]
}
must "sysusers and tmpfiles made remixd, remix and the folders" accounts_and_folders

man_and_completions() {
    in_ct test -s /usr/share/man/man1/remixd.1.gz &&
        in_ct bash -c 'source /usr/share/bash-completion/completions/remixd && declare -F _remixd' >/dev/null
}
check "man page and bash completion installed" man_and_completions

# The administrator's steps from README.md: the key for LoadCredential=, the API's address.
in_ct sh -c "umask 077; $stage/system_helper key > /etc/remixd/api_key"
in_ct sed -i \
    -e "/^api:\$/a\\  base_url: http://127.0.0.1:$port" \
    -e '/^logging:$/a\  stats_interval: 2s' /etc/remixd/config.yaml

in_ct systemd-run -q --unit=fake-api "$stage/system_helper" serve "$port"
fake_listening() {
    for _ in $(seq 100); do
        in_ct bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
must "the fake API listens on the container's loopback" fake_listening

start_service() {
    in_ct timeout 60 systemctl start remixd && [ "$(in_ct systemctl is-active remixd)" = active ]
}
must "systemctl start remixd (Type=notify: READY=1)" start_service
main_pid="$(in_ct systemctl show -p MainPID --value remixd)"

# --- a person of the group drops a file ----------------------------------------------------

in_ct useradd --create-home --groups remix alice
in_ct runuser -u alice -- sh -c "umask 0007 &&
    printf 'a cat wearing a tiny hat' > /srv/remix/inbox/cat.txt &&
    cp $stage/cat.png /srv/remix/inbox/.cat.png.tmp &&
    mv /srv/remix/inbox/.cat.png.tmp /srv/remix/inbox/cat.png"

published() {
    for _ in $(seq 300); do
        in_ct sh -c 'test -f /srv/remix/outbox/cat-*/metadata.json' 2>/dev/null && return 0
        sleep 0.1
    done
    in_ct find /srv/remix -ls || true
    return 1
}
must "the dropped file is published to the outbox" published

# shellcheck disable=SC2016 # the loop is the container shell's
group_reads_outbox() {
    in_ct sh -c 'stat -c "%a %U:%G %n" /srv/remix/outbox/cat-* /srv/remix/outbox/cat-*/*' &&
        in_ct runuser -u alice -- sh -c \
            'for f in /srv/remix/outbox/cat-*/*; do cat "$f" >/dev/null || exit 1; done' &&
        [ "$(in_ct sh -c 'stat -c "%a %G" /srv/remix/outbox/cat-*/metadata.json')" = "660 remix" ]
}
check "the outbox job folder is readable by the group (metadata.json 660 remix)" group_reads_outbox

# --- STATUS, reload, journal, stop ---------------------------------------------------------

status_pattern='^pending [0-9]+, in flight [0-9]+, completed [0-9]+, quarantined [0-9]+ \(since start\); today: done [0-9]+, quarantined [0-9]+, [0-9]+ images, \$[0-9]+\.[0-9][0-9] \(whole deployment\); API ok$'
status_counts() {
    local text=""
    for _ in $(seq 100); do
        text="$(in_ct systemctl show -p StatusText --value remixd)"
        grep -qE "$status_pattern" <<<"$text" && grep -q "completed 1," <<<"$text" &&
            { echo "  STATUS: $text"; return 0; }
        sleep 0.1
    done
    echo "  STATUS: $text"
    return 1
}
check "STATUS (systemctl show -p StatusText) has the counts, completed 1" status_counts

reload_service() {
    in_ct sed -i 's/^  stats_interval: 2s$/  stats_interval: 3s/' /etc/remixd/config.yaml &&
        in_ct timeout 30 systemctl reload remixd || return 1
    for _ in $(seq 100); do
        in_ct journalctl -q -u remixd -o cat | grep -q '"event":"daemon.reloaded"' &&
            [ "$(in_ct systemctl show -p MainPID --value remixd)" = "$main_pid" ] &&
            [ "$(in_ct systemctl is-active remixd)" = active ] && return 0
        sleep 0.1
    done
    in_ct journalctl -q -u remixd --no-pager | tail -n 5
    return 1
}
check "systemctl reload remixd: daemon.reloaded, same process" reload_service

live_security() {
    local level
    level="$(in_ct systemd-analyze security remixd.service | sed -n 's/.*Overall exposure level for remixd.service: \([0-9.]*\).*/\1/p')"
    echo "  exposure: $level"
    [ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 1.1) }'
}
check "systemd-analyze security (live) rates the unit 1.1 or lower" live_security

stop_service() {
    in_ct timeout 100 systemctl stop remixd &&
        [ "$(in_ct systemctl show -p Result --value remixd)" = success ] &&
        [ "$(in_ct systemctl show -p ExecMainStatus --value remixd)" = 0 ] &&
        [ "$(in_ct systemctl show -p NRestarts --value remixd)" = 0 ]
}
check "systemctl stop remixd: exit 0, never restarted" stop_service

# Only remixd's own lines (_SYSTEMD_UNIT); systemd's lines about the unit are plain text.
journal_json() {
    in_ct journalctl -q _SYSTEMD_UNIT=remixd.service -o cat |
        in_ct "$stage/system_helper" json-lines daemon.started daemon.ready job.completed \
            daemon.reloaded daemon.stopped
}
check "journal: every remixd line is JSON, start to stop" journal_json

finish
