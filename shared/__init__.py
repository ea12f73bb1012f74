"""songpop's common package: what the services must agree on, defined once."""
