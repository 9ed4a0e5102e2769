#!/bin/sh
# etcd-backups.sh DIR [PATTERN] — the newest etcd snapshot in DIR (files matching
# PATTERN, default `*.db`), as the `etcd-backup-recent` check reads it:
#   {"configured": true, "dir": DIR, "count": N, "newest": PATH, "ageSeconds": S, "sizeBytes": B}
# With no DIR: {"configured": false}. A DIR that is not a directory: exit 2 (the check
# cannot tell, so it is `error`, never passed).
set -eu
dir=${1:-}
pattern=${2:-*.db}
json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
if [ -z "$dir" ]; then
    echo '{"configured": false}'
    exit 0
fi
if [ ! -d "$dir" ]; then
    echo "etcd-backups.sh: $dir is not a directory; set the param backupDir to where etcd snapshots are saved" >&2
    exit 2
fi
count=0
newest=
newest_mtime=0
for f in "$dir"/$pattern; do
    [ -f "$f" ] || continue
    count=$((count + 1))
    mtime=$(stat -c %Y "$f")
    if [ "$mtime" -gt "$newest_mtime" ]; then
        newest_mtime=$mtime
        newest=$f
    fi
done
now=$(date +%s)
printf '{"configured": true, "dir": %s, "count": %d' "$(json_string "$dir")" "$count"
if [ -n "$newest" ]; then
    printf ', "newest": %s, "ageSeconds": %d, "sizeBytes": %d' \
        "$(json_string "$newest")" "$((now - newest_mtime))" "$(stat -c %s "$newest")"
fi
echo '}'
