"""The collector's web app: inverter ingest, /metrics, /data.json, the JSON API and the UI."""
