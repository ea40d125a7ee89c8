#!/usr/bin/env bash
# Checks that documentation references resolve inside the checkout:
#   1. every path of the form docs/<...>.md named in a source, config, test or markdown file exists;
#   2. every relative markdown link [text](x.md) in a markdown file points at an existing file;
#   3. no file cites the specification notes kept outside the repository (its pages live in
#      docs/methods/ instead).
# Files: what git tracks plus new files it does not ignore. Needs only bash, git, grep and sed.
# Exit status 1 and one "file:line: ..." line per problem when something is wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -d '' -t listed < <(git ls-files -z --cached --others --exclude-standard)
all=()
files=()
md=()
for f in "${listed[@]}"; do
  [[ -f "$f" ]] || continue  # tracked but deleted in the working tree
  [[ "$f" == .ci/* ]] || all+=("$f")
  case "$f" in
    *.h | *.hpp | *.c | *.cc | *.cpp | *.cu | *.cuh | *.py | *.sh | *.cmake | */CMakeLists.txt | CMakeLists.txt | \
      *.yaml | *.yml | *.toml | *.md) files+=("$f") ;;
  esac
  [[ "$f" == *.md ]] && md+=("$f")
done

problems=0
report() {
  echo "$1" >&2
  problems=$((problems + 1))
}

# 1. docs/<...>.md paths (not preceded by a path character, so x/docs/y.md is not taken for one).
while IFS= read -r hit; do
  [[ -n "$hit" ]] || continue
  where=${hit%%:docs/*}
  path=docs/${hit#*:docs/}
  [[ -e "$path" ]] || report "$where: $path does not exist"
done < <(grep -nIoE '(^|[^A-Za-z0-9_./-])docs/[A-Za-z0-9_./-]*\.md' -- "${files[@]}" /dev/null |
  sed -E 's#^([^:]+:[0-9]+:).?(docs/)#\1\2#')

# 2. Relative markdown links to .md files, resolved against the linking file's folder.
while IFS= read -r hit; do
  [[ -n "$hit" ]] || continue
  file=${hit%%:*}
  rest=${hit#*:}
  line=${rest%%:*}
  target=${rest#*:}
  target=${target#](}
  target=${target%)}
  target=${target%% *}
  target=${target%%#*}
  case "$target" in http://* | https://* | mailto:* | /* | "") continue ;; esac
  dir=$(dirname "$file")
  [[ -e "$dir/$target" ]] || report "$file:$line: link ($target) does not exist"
done < <(grep -nIoE '\]\([^)[:space:]]+\.md(#[^)[:space:]]*)?( [^)]*)?\)' -- "${md[@]}" /dev/null)

# 3. Citations of the external notes (the names are split so that this file does not match).
pattern='ALGORITHMS''\.md|DESIGN''\.md'
while IFS= read -r hit; do
  [[ -n "$hit" ]] || continue
  report "$hit: cites a file outside the repository; point it at a page in docs/methods/"
done < <(grep -nIE "$pattern" -- "${all[@]}" /dev/null | sed -E 's/^([^:]+:[0-9]+):.*/\1/')

if ((problems > 0)); then
  echo "check_doc_links: $problems problem(s)" >&2
  exit 1
fi
echo "check_doc_links: ok (${#files[@]} files, ${#md[@]} markdown)"
