"""The gate's sans-IO core: configuration, policy, intake decisions, the event log's bookkeeping.

Rule: no bcc, no maps, no files, no sockets, no clock reads: values in, typed values out.
"""
