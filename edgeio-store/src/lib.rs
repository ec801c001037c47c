//! edgeio-store
