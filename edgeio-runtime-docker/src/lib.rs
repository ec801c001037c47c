//! edgeio-runtime-docker
