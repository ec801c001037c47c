//! edgeio-transport-mqtt
