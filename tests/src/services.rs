//! The external services some tests need, found through the environment:
//! `REDIS_URL` (default `redis://127.0.0.1:6379`), `KAFKA_BROKERS`,
//! `AMQP_URL` (default the local RabbitMQ). When `CI`
//! is set a missing service fails the test; elsewhere the test says it is
//! skipped and why.

/// Where the test Redis is, after checking it answers `PING`; `None` (with
/// a message) when it does not and `CI` is unset.
pub fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ping = redis::Client::open(url.as_str()).and_then(|c| {
        let mut conn = c.get_connection_with_timeout(std::time::Duration::from_secs(2))?;
        redis::cmd("PING").query::<String>(&mut conn)
    });
    match ping {
        Ok(_) => Some(url),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but Redis at {url} does not answer ({e}); `make test` starts it")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: Redis at {url} does not answer ({e}); set REDIS_URL or run `make test`"
            );
            None
        }
    }
}

/// A key prefix no other test run uses.
pub fn unique_prefix(what: &str) -> String {
    format!(
        "docproc-test-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Deletes every key under `prefix` (used when a test's queue is dropped).
pub fn redis_cleanup(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = match redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
    {
        Ok(k) => k,
        Err(_) => return,
    };
    for chunk in keys.chunks(500) {
        let _ = redis::cmd("DEL").arg(chunk).query::<u64>(&mut conn);
    }
}

/// The Kafka-protocol brokers of `KAFKA_BROKERS` (`HOST:PORT[,…]`), after
/// checking the first accepts connections; `None` (with a message) when
/// unset or unreachable and `CI` is unset.
pub fn kafka_brokers() -> Option<String> {
    let brokers = match std::env::var("KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => b,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but KAFKA_BROKERS is not; `make test` starts a broker and sets it")
        }
        _ => {
            eprintln!("SKIPPED: KAFKA_BROKERS is not set; run `make test` to get a local broker");
            return None;
        }
    };
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    match accepts(&first) {
        true => Some(brokers),
        false if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the Kafka broker at {first} does not accept connections")
        }
        false => {
            eprintln!("SKIPPED: the Kafka broker at {first} does not accept connections");
            None
        }
    }
}

/// Where the test RabbitMQ is (`AMQP_URL`, default
/// `amqp://guest:guest@127.0.0.1:5672/%2f`), after checking its port
/// accepts connections; `None` (with a message) when it does not and `CI`
/// is unset.
pub fn amqp_url() -> Option<String> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split(['/', '?']).next().unwrap_or_default();
    match accepts(hostport) {
        true => Some(url),
        false if std::env::var_os("CI").is_some() => {
            panic!("CI is set but RabbitMQ at {hostport} does not accept connections; `make test` starts it")
        }
        false => {
            eprintln!("SKIPPED: RabbitMQ at {hostport} does not accept connections; set AMQP_URL or run `make test`");
            None
        }
    }
}

/// Closes, from the RabbitMQ side (as an operator or a broker restart
/// would), the connection a docproc process `pid` opened for the queue
/// prefix `prefix` (connections are named `docproc PREFIX pid PID`).
/// `false` when there is no `rabbitmqctl` on this machine (a remote
/// RabbitMQ); panics when no such connection is open.
pub fn close_amqp_connection(prefix: &str, pid: u32) -> bool {
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "--no-table-headers"])
        .args(["pid", "client_properties"])
        .output();
    let Ok(listed) = listed else {
        return false;
    };
    assert!(listed.status.success(), "{listed:?}");
    let want = format!("docproc {prefix} pid {pid}");
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    let conn = text
        .lines()
        .find_map(|l| {
            l.split_once('\t')
                .filter(|(_, props)| props.contains(&want))
        })
        .map(|(c, _)| c.to_string())
        .unwrap_or_else(|| panic!("no connection named {want:?} in {text}"));
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &conn, "closed by the test"])
        .output()
        .expect("rabbitmqctl close_connection");
    assert!(closed.status.success(), "{closed:?}");
    true
}

/// Whether `HOST:PORT` accepts a TCP connection within 2 s.
fn accepts(hostport: &str) -> bool {
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        })
}
