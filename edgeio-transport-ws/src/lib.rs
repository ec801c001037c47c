//! edgeio-transport-ws
