#!/usr/bin/env bash
# svsettle demonstration on a real s6-svscan in a throw-away root.
#
# 1. Package version 1 installs five stock services; the first reconcile creates
#    their live directories and enables them; s6-svscan starts them.
# 2. The admin edits two live run scripts.
# 3. Package version 2 lands as one transaction: it changes web's run script, adds
#    metrics, removes queue, changes mail's finish script (the admin edited mail's
#    run) and changes cache's run script (which the admin edited too).
# 4. One reconcile: web and mail restart once, db keeps its pid, cache keeps the
#    admin's run script and reports a conflict, queue is stopped and removed,
#    metrics is created and started.
#
# Uses the embedded default configuration (plus enable-new = true, so that new
# services start). Needs root for apt-get only; everything else stays in the root.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
bash "$here/scripts/setup.sh" --demo
echo "== building svsettle"
(cd "$here" && cargo build --release --quiet)
svsettle=$here/target/release/svsettle

R=$(mktemp -d /tmp/svsettle-demo.XXXXXX)
SVSCAN=""
cleanup() {
  if [ -n "$SVSCAN" ]; then
    # stop the scanner and everything it started, by pid
    kids=$(ps -o pid= --ppid "$SVSCAN" 2>/dev/null || true)
    grandkids=""
    for k in $kids; do grandkids="$grandkids $(ps -o pid= --ppid "$k" 2>/dev/null || true)"; done
    kill -9 "$SVSCAN" $kids $grandkids 2>/dev/null || true
    wait "$SVSCAN" 2>/dev/null || true
  fi
  rm -rf -- "$R"
}
trap cleanup EXIT
S=$R/usr/share/s6/sv   # stock (the package's)
L=$R/etc/s6/sv         # live (svsettle's)
sv() { "$svsettle" --root "$R" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

service() { # NAME RUN-BODY [FINISH-BODY]
  mkdir -p "$S/$1"
  printf '#!/bin/sh\n# %s\nexec sleep 100000\n' "$2" >"$S/$1/run"
  chmod 755 "$S/$1/run"
  if [ -n "${3:-}" ]; then printf '#!/bin/sh\n# %s\n' "$3" >"$S/$1/finish"; chmod 755 "$S/$1/finish"; fi
}
pids() {
  for s in web db mail cache queue metrics; do
    if [ -d "$L/$s" ]; then
      printf '  %-8s %s\n' "$s" "$(s6-svstat -o up,pid "$L/$s" 2>/dev/null | awk '{print ($1=="true") ? "up, pid " $2 : "down"}')"
    else
      printf '  %-8s %s\n' "$s" "(no live directory)"
    fi
  done
}
pid_of() { s6-svstat -o pid "$L/$1" 2>/dev/null || echo -; }

mkdir -p "$R/etc" "$R/run/service"
printf '[domain.s6]\nenable-new = true\n' >"$R/etc/svsettle.toml"
say "starting s6-svscan on $R/run/service"
s6-svscan "$R/run/service" >/dev/null 2>&1 &
SVSCAN=$!
until s6-svscanctl -a "$R/run/service" 2>/dev/null; do sleep 0.05; done

say "package v1 installs web, db, mail, cache, queue into $S"
for s in web db cache queue; do service "$s" "$s v1"; done
service mail "mail v1" "mail finish v1"
"$svsettle" --root "$R" enqueue /usr/share/s6/sv
sv reconcile --pending
for s in web db mail cache queue; do
  until [ "$(s6-svstat -o up "$L/$s" 2>/dev/null)" = true ]; do sleep 0.05; done
done
echo "running:"; pids

say "the admin edits live run scripts of mail and cache"
sed -i 's/^exec/# admin: more workers\nexec/' "$L/mail/run" "$L/cache/run"
grep -H admin "$L/mail/run" "$L/cache/run"

declare -A before
for s in web db mail cache queue; do before[$s]=$(pid_of "$s"); done

say "package v2: one transaction changes web/run, mail/finish, cache/run; adds metrics; removes queue"
service web "web v2"
service cache "cache v2"
printf '#!/bin/sh\n# mail finish v2\n' >"$S/mail/finish"
service metrics "metrics v1"
rm -rf -- "${S:?}/queue"
# what the pacman hook / apk trigger / dpkg trigger would record:
sv enqueue /usr/share/s6/sv/web/run /usr/share/s6/sv/mail/finish /usr/share/s6/sv/cache/run \
  /usr/share/s6/sv/metrics /usr/share/s6/sv/queue

say "svsettle reconcile --pending --dry-run (the plan)"
sv reconcile --pending --dry-run

say "svsettle reconcile --pending"
sv reconcile --pending || true
until [ "$(s6-svstat -o up "$L/metrics" 2>/dev/null)" = true ]; do sleep 0.05; done

say "what happened to each service"
for s in web db mail cache queue metrics; do
  now=$(pid_of "$s")
  was=${before[$s]:--}
  if [ ! -d "$L/$s" ]; then verdict="stopped and removed"
  elif [ "$was" = - ]; then verdict="new, started (pid $now)"
  elif [ "$was" = "$now" ]; then verdict="left alone (pid $now, unchanged)"
  else verdict="restarted once (pid $was -> $now)"; fi
  printf '  %-8s %s\n' "$s" "$verdict"
done
echo "mail/run keeps the admin's edit and has the new finish:"
grep -H -e admin -e v2 "$L/mail/run" "$L/mail/finish" | sed 's/^/  /'

say "svsettle status"
sv status
say "svsettle diff cache (stock vs live: the kept conflict)"
sv diff cache
say "svsettle history"
sv history
say "a second reconcile changes nothing"
sv reconcile --all
