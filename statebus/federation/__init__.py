"""Federation: how statebus nodes find and talk to each other.

``dht`` maps public keys to signed address records (a Kademlia "DNS for public keys");
``dht_record`` is its pure record format and ``dht_memory`` an in-memory stand-in for tests.
"""
