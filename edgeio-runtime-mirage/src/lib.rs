//! edgeio-runtime-mirage
