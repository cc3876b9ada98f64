

def test_clean_tick_takes_the_fields_in_schema_order_and_builds_the_same_record() -> None:
    import inspect

    from schemas.records import CleanTick, clean_tick

    assert tuple(inspect.signature(clean_tick).parameters) == CleanTick.FIELDS
    values = ("OANDA", "EURUSD", 1_399_852_800_289, 1_399_852_800_289_512, 1.37596, 1.37611,
              1.376035, 0.00015, 1.37598, 1.37611, "FXCM", "OANDA", 2, 1.2e-5, None, 42)
    built = clean_tick(*values)
    assert type(built) is CleanTick
    assert built == CleanTick(**dict(zip(CleanTick.FIELDS, values, strict=True)))
    assert built.to_dict() == dict(zip(CleanTick.FIELDS, values, strict=True))
