"""What the tests build and drive, as plain modules (fixtures live in conftest.py files).

- ``mg``: the one hand-made MG dataset builder (``mg_dataset``), four-view exams, phantoms;
- ``writers``: small exams and hand-placed inference results for the writer tests;
- ``site``: a populated node behind a real HTTP server, for the web tests;
- ``node_process``: `mammo-node serve` as a child process;
- ``orthanc``: Orthanc as a real PACS;
- ``tools``: free ports, ``wait_for``, dcmtk; ``environment``: shared data and PostgreSQL;
- ``trainer``: trainer options small enough for CPU tests.
"""
