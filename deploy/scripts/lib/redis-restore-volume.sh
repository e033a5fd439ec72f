#!/bin/sh
# Prepare a stopped Redis node's data directory so that its next start loads a backup.
#
# Usage: redis-restore-volume.sh DATA_DIR   (the backup is DATA_DIR/restore.rdb)
#
# Runs inside the restore helper pod (POSIX sh, busybox) and in the offline tests. The
# Bitnami Redis runs with `appendonly yes`: on start Redis then reads only the append-only
# files and ignores dump.rdb, so dropping in dump.rdb and deleting the AOF starts an empty
# Redis. Instead the backup becomes the base of a fresh multi-part AOF (Redis 7+: a base
# file may be in RDB format), and dump.rdb too for nodes that run without AOF.
set -eu
dir=${1:?usage: redis-restore-volume.sh DATA_DIR}
aofdir=${AOF_DIR_NAME:-appendonlydir}
aofname=${AOF_FILE_NAME:-appendonly.aof}
rdb="$dir/restore.rdb"
[ -s "$rdb" ] || { echo "restore: $rdb missing or empty" >&2; exit 1; }
[ "$(head -c 5 "$rdb")" = REDIS ] || { echo "restore: $rdb is not an RDB file" >&2; exit 1; }
rm -rf "${dir:?}/$aofdir" "${dir:?}/$aofname" "${dir:?}/temp-"*
mkdir -p "$dir/$aofdir"
cp "$rdb" "$dir/$aofdir/$aofname.1.base.rdb"
printf 'file %s.1.base.rdb seq 1 type b\n' "$aofname" >"$dir/$aofdir/$aofname.manifest"
mv "$rdb" "$dir/dump.rdb"
echo "restore: $dir/$aofdir holds the backup as its AOF base; dump.rdb replaced"
