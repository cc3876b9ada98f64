"""Historical bulk files: vendor tick formats parsed at the edge (:mod:`.parse`) and the
manifest of what has been loaded into which topic (:mod:`.manifest`). The loader itself is
``offline/load.py`` (``tickstream load``)."""
