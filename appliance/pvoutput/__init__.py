"""Upload to PVOutput (``[pvoutput]``): what Enecsys owners used e2pv for.

- :mod:`~appliance.pvoutput.api`: PVOutput's requests and answers, pure code, with
  the documented facts relied on;
- :mod:`~appliance.pvoutput.aggregate`: the inverters' state made into one status
  per PVOutput system and interval, pure code;
- :mod:`~appliance.pvoutput.uploader`: the queue (in the store) and the sending,
  on a background thread.

Which process runs it: a background thread of the web service (``solargw web``,
one gunicorn worker), started with the app when ``[pvoutput] enabled``. The
appliance's services together must stay within about 120 MiB on a Pi Zero 2 W;
a fourth service would cost a Python interpreter with the store's imports
(tens of MiB) to do one HTTP request every few minutes, while the thread costs
one stack and the queue's rows. The web service already holds everything the
uploader reads (the store, the settings and their changes, the time zone) and
is the one that shows its state on the status page. What speaks against it is
that uploads pause while the web service restarts: the queue is in the
database, so they resume from where they were.
"""
