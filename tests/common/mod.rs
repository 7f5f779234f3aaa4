//! What the test targets that run whole stacks of processes share.

use std::net::TcpListener;

/// `count` distinct free ports on loopback. The listeners are held together so the
/// ports differ, and released before returning, just before the caller's processes
/// bind them.
pub fn distinct_free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on loopback"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}
