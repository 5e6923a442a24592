#!/usr/bin/env bash
# Counts the notes app's wiring ("glue"): every line that is not its
# handlers and their route lists, its SQL, or its domain types and rules.
# Counted: server.rs, mod.rs, the three binaries, the handlers' state type
# (AppState), the store's backend seam (StoreBackend, the Store struct,
# Store::new, Store::cluster) and schema.rs's tenancy-builder functions.
# A line is counted if it is neither blank nor a comment; `use` lines are
# counted. Run from anywhere: bash examples/notes/glue-lines.sh
set -euo pipefail
cd "$(dirname "$0")"
code() { awk '/^[[:space:]]*$/ || /^[[:space:]]*\/\// {next} {n++} END {print n+0}'; }
part() { printf '%-28s %4d\n' "$1" "$2"; total=$((total + $2)); }
total=0
part "server.rs" "$(code < server.rs)"
part "mod.rs" "$(code < mod.rs)"
part "bin/*.rs" "$(cat bin/*.rs | code)"
part "api.rs: AppState" "$(sed -n '/^pub(crate) struct AppState/,/^}/p' api.rs | code)"
part "store/mod.rs: backend seam" "$(sed -n \
    -e '/^pub(crate) trait StoreBackend/,/^impl<T: StackBackend/p' \
    -e '/^pub(crate) struct Store/,/^}/p' \
    -e '/^    pub(crate) fn new(stack/,/^    }/p' \
    -e '/^    pub(crate) fn cluster/,/^    }/p' store/mod.rs | code)"
part "schema.rs: builder fns" "$(sed -n \
    -e '/^pub(crate) fn postgres/,/^}/p' \
    -e '/^pub(crate) fn sqlite/,/^}/p' schema.rs | code)"
printf '%-28s %4d\n' "glue in all" "$total"
printf '%-28s %4d\n' "the whole app (all lines)" "$(cat ./*.rs ./*/*.rs | wc -l)"
