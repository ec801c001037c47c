//! edgeio-scheduler
