#!/usr/bin/env bash
# Assembles a container image from a docproc binary built on this machine:
# `FROM scratch` plus the binary, the shared libraries it loads, the CA
# certificates, a /bin/sh and a non-root user; no registry needed. The deployment
# test runs docker-compose.yml on it with podman (Dockerfile builds the
# same layout from the Rust and Debian images where a registry answers).
#   scripts/local-image.sh target/debug/docproc localhost/docproc:test
set -euo pipefail
bin="${1:?usage: local-image.sh BINARY TAG}"
tag="${2:?usage: local-image.sh BINARY TAG}"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$ctx/data"
install -m 0755 "$bin" "$root/usr/local/bin/docproc"
# The loader and every library the binary links (ldd's absolute paths).
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
	cp --parents -L "$lib" "$root/"
done
# /bin/sh for shell-form health checks (podman-compose runs every health
# check through one): Debian's dash, which needs only libc.
mkdir -p "$root/bin"
install -m 0755 /bin/dash "$root/bin/sh"
for lib in $(ldd /bin/dash | grep -o '/[^ ]*'); do
	cp --parents -L "$lib" "$root/"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/sbin/nologin\ndocproc:x:10001:10001:docproc:/data:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\ndocproc:x:10001:\n' >"$root/etc/group"
cat >"$ctx/Containerfile" <<'CF'
FROM scratch
COPY root/ /
COPY --chown=10001:10001 data/ /data/
ENV PATH=/usr/local/bin:/bin DOCPROC_DATA_DIR=/data
USER 10001
WORKDIR /data
ENTRYPOINT ["docproc"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
CF
chmod 1777 "$root/tmp"
podman build --quiet --tag "$tag" "$ctx" >/dev/null
echo "$tag"
