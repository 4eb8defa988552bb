#!/usr/bin/env bash
# svsettle demonstration: real pacman transactions, a real s6-svscan, one throw-away root.
#
# 1. pacman installs five packages shipping stock s6 services (web, db, mail, cache,
#    and "extras" with queue). svsettle's hook runs once after the transaction,
#    creates the live directories and enables them; s6-svscan starts them.
# 2. The admin edits the live run scripts of mail and cache.
# 3. One pacman transaction upgrades all five packages: web's run script changes,
#    mail's finish script changes, cache's run script changes (the admin edited it
#    too), db is rebuilt with identical service files, and extras drops queue and
#    adds metrics.
# 4. The hook reconciles once: web and mail restart once each, db and cache keep
#    their pids (cache keeps the admin's run script and reports a conflict), queue
#    is stopped and removed, metrics is created and started.
#
# Uses the embedded default configuration plus enable-new = true (so that new
# services start). Run as root (apt-get; pacman chroots into the root to run hooks).
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
bash "$here/scripts/setup.sh" --demo
echo "== building svsettle (release, with pacman attribution)"
(cd "$here" && cargo build --release --quiet --features alpm)
svsettle=$here/target/release/svsettle

R=$(mktemp -d /tmp/svsettle-demo.XXXXXX)
P=$(mktemp -d /tmp/svsettle-demo-pkgs.XXXXXX)
SVSCAN=""
cleanup() {
  if [ -n "$SVSCAN" ]; then
    # stop the scanner, then everything it started, by pid
    local below="" frontier="$SVSCAN" next p
    while [ -n "$frontier" ]; do
      next=""
      for p in $frontier; do next="$next $(ps -o pid= --ppid "$p" 2>/dev/null || true)"; done
      below="$below $next"
      frontier=$(echo $next)
    done
    kill -9 "$SVSCAN" $below 2>/dev/null || true
    wait "$SVSCAN" 2>/dev/null || true
  fi
  rm -rf -- "$R" "$P"
}
trap cleanup EXIT
L=$R/etc/s6/sv
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sv() { "$svsettle" --root "$R" "$@"; }
pacman_() {
  pacman --config "$R/etc/pacman.conf" --root "$R" --dbpath "$R/var/lib/pacman" \
    --hookdir "$here/hooks" --logfile "$R/var/log/pacman.log" --cachedir "$R/var/cache/pacman/pkg" \
    --noconfirm --noprogressbar "$@"
}

# --- the throw-away root: what pacman's chroot needs to run the hook ---------------
copy_in() { [ -e "$R$1" ] || { mkdir -p "$(dirname "$R$1")" && cp -L "$1" "$R$1"; }; }
copy_with_libs() {
  copy_in "$1"
  ldd "$1" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | while read -r lib; do copy_in "$lib"; done
}
mkdir -p "$R"/{etc,tmp,bin,dev,run/service,var/lib/pacman,var/log,var/cache/pacman/pkg,usr/bin}
printf '[options]\nSigLevel = Never\nLocalFileSigLevel = Never\nArchitecture = auto\n' >"$R/etc/pacman.conf"
printf '[domain.s6]\nenable-new = true\n' >"$R/etc/svsettle.toml"
cp "$svsettle" "$R/usr/bin/svsettle"
copy_with_libs "$svsettle"
for prog in s6-svc s6-svstat s6-svok s6-svscanctl s6-svlisten1 s6-ftrigrd; do copy_with_libs "$(command -v "$prog")"; done
copy_with_libs "$(readlink -f /bin/sh)"
cp "$(readlink -f /bin/sh)" "$R/bin/sh"
for lib in /usr/lib/*/libalpm.so.1[3-6]; do [ -e "$lib" ] && copy_with_libs "$lib"; done
mknod -m 666 "$R/dev/null" c 1 3

# --- packages, built with bsdtar -------------------------------------------------
# pkg NAME VERSION SERVICE:RUN-TAG[:FINISH-TAG] ...
pkg() {
  local name=$1 ver=$2 stage
  shift 2
  stage=$P/stage-$name-$ver
  mkdir -p "$stage"
  for spec in "$@"; do
    IFS=: read -r svc runtag fintag <<<"$spec"
    mkdir -p "$stage/usr/share/s6/sv/$svc"
    printf '#!/bin/sh\n# %s\nexec sleep 100000\n' "$runtag" >"$stage/usr/share/s6/sv/$svc/run"
    chmod 755 "$stage/usr/share/s6/sv/$svc/run"
    if [ -n "$fintag" ]; then
      printf '#!/bin/sh\n# %s\n' "$fintag" >"$stage/usr/share/s6/sv/$svc/finish"
      chmod 755 "$stage/usr/share/s6/sv/$svc/finish"
    fi
  done
  printf 'pkgname = %s\npkgbase = %s\npkgver = %s\npkgdesc = svsettle demo\nbuilddate = 1700000000\npackager = demo\nsize = 1\narch = any\nlicense = ISC\n' \
    "$name" "$name" "$ver" >"$stage/.PKGINFO"
  bsdtar -czf "$P/$name-$ver-any.pkg.tar.gz" -C "$stage" .PKGINFO usr
  echo "$P/$name-$ver-any.pkg.tar.gz"
}

pid_of() { s6-svstat -o up,pid "$L/$1" 2>/dev/null | awk '$1 == "true" { print $2 }' || true; }
wait_up() { for s in "$@"; do until [ -n "$(pid_of "$s")" ]; do sleep 0.05; done; done; }

say "starting s6-svscan on $R/run/service"
s6-svscan "$R/run/service" >/dev/null 2>&1 &
SVSCAN=$!
until s6-svscanctl -a "$R/run/service" 2>/dev/null; do sleep 0.05; done

say "pacman -U: web-1 db-1 mail-1 cache-1 extras-1 (one transaction)"
pacman_ -U \
  "$(pkg web 1-1 web:web-v1)" "$(pkg db 1-1 db:db-v1)" "$(pkg mail 1-1 mail:mail-v1:mail-finish-v1)" \
  "$(pkg cache 1-1 cache:cache-v1)" "$(pkg extras 1-1 queue:queue-v1)" 2>&1 | grep -v '^warning: ' || true
wait_up web db mail cache queue

say "the admin edits the live run scripts of mail and cache"
sed -i 's/^exec/# admin: more workers\nexec/' "$L/mail/run" "$L/cache/run"
grep -H admin "$L/mail/run" "$L/cache/run" | sed "s|$R||"

declare -A before
for s in web db mail cache queue; do before[$s]=$(pid_of "$s"); done
echo "running:"
for s in web db mail cache queue; do printf '  %-8s pid %s\n' "$s" "${before[$s]}"; done

say "pacman -U: web-2 db-2 mail-2 cache-2 extras-2 (one transaction)"
pacman_ -U \
  "$(pkg web 2-1 web:web-v2)" "$(pkg db 2-1 db:db-v1)" "$(pkg mail 2-1 mail:mail-v1:mail-finish-v2)" \
  "$(pkg cache 2-1 cache:cache-v2)" "$(pkg extras 2-1 metrics:metrics-v1)" 2>&1 | grep -v '^warning: ' || true
wait_up metrics

say "what happened to each service"
for s in web db mail cache queue metrics; do
  now=$(pid_of "$s")
  was=${before[$s]:-}
  if [ ! -d "$L/$s" ]; then verdict="stopped and removed (its package dropped it)"
  elif [ -z "$was" ]; then verdict="new: created and started (pid $now)"
  elif [ "$was" = "$now" ]; then verdict="left alone (pid $now, as before)"
  else verdict="restarted once (pid $was -> $now)"; fi
  printf '  %-8s %s\n' "$s" "$verdict"
done
echo "mail keeps the admin's run edit and got the new finish:"
grep -H -e admin -e v2 "$L/mail/run" "$L/mail/finish" | sed "s|$R|  |"

say "svsettle status"
sv status
say "svsettle diff cache (stock vs live: the conflict it kept)"
sv diff cache
say "svsettle history"
sv history
say "svsettle reconcile --all: a second run changes nothing"
sv reconcile --all
