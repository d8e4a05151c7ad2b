"""Layer 2: the protocol engines, sans-I/O (they take datagrams and ``now``,
return what to send and what happened; no sockets, clock, randomness of their
own or greenlets).  See docs/architecture.md."""
