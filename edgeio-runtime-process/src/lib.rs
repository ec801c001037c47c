//! edgeio-runtime-process
