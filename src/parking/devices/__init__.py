"""Device registry, credentials, broker ACL and MQTT message types."""
