"""ANPR gate cameras that push their recognitions over HTTP in their maker's format
(Vzenith/臻识 ``AlarmInfoPlate``, Hikvision ISAPI ``EventNotificationAlert``), turned into
the contract's passages on the platform's one ingest path (``parking.occupancy.ingest``),
and the lane's decision turned into the maker's reply (docs/protocol.md, "Cameras")."""
