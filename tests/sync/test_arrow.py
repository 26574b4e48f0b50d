"""tests/test_arrow.py, re-collected against wis2l_core.sync (see _adapter.py).

The module's other tests are about the asynchronous machinery (``arrow_batches`` as an
async iterator, cancellation, patching the async module's import)."""

from tests.sync._adapter import recollect

recollect(
    globals(),
    "test_arrow",
    only={
        "test_every_type_round_trips_exact_values",
        "test_random_rows_round_trip_in_any_batching",
        "test_one_dimensional_arrays_become_lists",
        "test_a_transaction_reads_its_own_writes",
        "test_repository_listings_and_typed_queries",
        "test_errors_are_ours_and_the_pool_survives",
        "test_export_writes_parquet_that_reads_back",
    },
)
