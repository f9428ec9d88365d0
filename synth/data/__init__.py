"""Datasets: raw Amazon Reviews 2018 processing, MiniOneRec-layout import, and the
normalized form every later stage reads (see ``synth.data.dataset``)."""
