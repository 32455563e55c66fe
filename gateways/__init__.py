"""Edge code that speaks to hardware: MQTT bridge, vendor adapters, device simulators."""
