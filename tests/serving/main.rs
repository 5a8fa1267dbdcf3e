//! Serving certificates: the resolver through real TLS handshakes (IP
//! addresses by the local address included), and the axum
//! integration (the port 80 router, the TLS listener, the example server).

#[path = "../common/mod.rs"]
mod common;

#[cfg(all(feature = "axum", feature = "fs"))]
mod axum_serve;
mod ip_addresses;
mod resolver;
