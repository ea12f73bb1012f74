"""songpop's services. They never import each other: they meet through MQTT, REST and the database."""
