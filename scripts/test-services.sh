#!/usr/bin/env bash
# Makes sure the services the tests use are up, installing and starting
# what is missing. Run by `make test`; safe to run again.
#   Redis at $REDIS_URL (default redis://127.0.0.1:6379): started locally
#   (no persistence, like the test machines' own) when it does not answer.
#   RabbitMQ at $AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f):
#   installed from Debian and started when its port does not answer.
#   Python's aiosmtpd (pip): the SMTP server the mail test starts.
#   Chromium and ChromeDriver (Debian): the dashboard test's browser.
#   strace (Debian): the durability test's witness.
#   podman, podman-compose, runc (Debian): the deployment test.
set -euo pipefail

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

apt_install() {
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

redis_up() { redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; }

if ! command -v redis-cli >/dev/null 2>&1; then
	echo "services: installing redis (redis-cli and redis-server)"
	apt_install redis-server
fi
if ! redis_up; then
	hostport="${REDIS_URL#redis://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
	host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=6379
	case "$host" in
	127.0.0.1|localhost|::1) ;;
	*) echo "services: Redis at $REDIS_URL does not answer and is not local; start it or unset REDIS_URL" >&2; exit 1 ;;
	esac
	echo "services: starting redis-server on 127.0.0.1:$port"
	mkdir -p /tmp/docproc-redis
	redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
		--dir /tmp/docproc-redis --logfile /tmp/docproc-redis/redis.log
	for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
	redis_up || { echo "services: redis-server did not start; see /tmp/docproc-redis/redis.log" >&2; exit 1; }
fi
echo "services: redis at $REDIS_URL answers"

# RabbitMQ (the amqp:// adapter's conformance suite and worker-crash test).
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
amqp_hostport="${AMQP_URL#amqp://}"; amqp_hostport="${amqp_hostport##*@}"; amqp_hostport="${amqp_hostport%%/*}"
amqp_host="${amqp_hostport%%:*}"; amqp_port="${amqp_hostport##*:}"; [ "$amqp_port" = "$amqp_hostport" ] && amqp_port=5672
amqp_up() { (exec 3<>"/dev/tcp/$amqp_host/$amqp_port") 2>/dev/null; }
if ! amqp_up; then
	case "$amqp_host" in
	127.0.0.1|localhost) ;;
	*) echo "services: RabbitMQ at $amqp_hostport does not answer and is not local; start it or unset AMQP_URL" >&2; exit 1 ;;
	esac
	if ! command -v rabbitmq-server >/dev/null 2>&1; then
		echo "services: installing rabbitmq-server"
		apt_install rabbitmq-server
	fi
	echo "services: starting rabbitmq-server"
	rabbitmq-server -detached
	timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
	for _ in $(seq 1 300); do amqp_up && break; sleep 0.2; done
	amqp_up || { echo "services: RabbitMQ did not start (rabbitmq-server -detached); see /var/log/rabbitmq" >&2; exit 1; }
fi
echo "services: rabbitmq at $amqp_hostport answers"

# The mail test's SMTP server: Python's aiosmtpd (started by the test itself
# on a free loopback port, writing into a maildir the test reads).
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
	command -v python3 >/dev/null 2>&1 || apt_install python3
	python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
	echo "services: installing aiosmtpd (pip)"
	python3 -m pip install --quiet --disable-pip-version-check aiosmtpd 2>/dev/null \
		|| python3 -m pip install --quiet --disable-pip-version-check --break-system-packages aiosmtpd
fi
python3 -c 'import aiosmtpd' && echo "services: aiosmtpd is installed"

# The dashboard test drives a real headless Chromium through ChromeDriver
# (Debian's chromium and chromium-driver: /usr/bin/chromium, /usr/bin/chromedriver).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
	echo "services: installing chromium and chromium-driver"
	apt_install chromium chromium-driver
fi
/usr/bin/chromedriver --version >/dev/null && echo "services: chromium and chromedriver are installed"

# strace: the durability test reads the order of fsyncs and answers from it.
if ! command -v strace >/dev/null 2>&1; then
	echo "services: installing strace"
	apt_install strace
fi

# The deployment test runs docker-compose.yml with Debian's podman and
# podman-compose (runc: crun refuses machines with cgroups v1 and v2 mixed;
# the dnsname plugin lets containers reach each other by service name).
if ! command -v podman-compose >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
	|| [ ! -x /usr/lib/cni/dnsname ]; then
	echo "services: installing podman, podman-compose, runc and the CNI dnsname plugin"
	apt_install podman podman-compose runc golang-github-containernetworking-plugin-dnsname
fi
podman --version >/dev/null && echo "services: podman and podman-compose are installed"
