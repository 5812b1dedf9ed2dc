"""Published read contracts between services: the owner of a collection is its only writer, and
other services read it only through these modules (fields read here change only compatibly)."""
