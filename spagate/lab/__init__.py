"""The lab kit: throwaway network namespaces, probes, a real gate daemon in them, the one packet
builder and the helpers shared by the demo, the tests and the benchmarks.

Rule: nothing in the product imports the lab, except `spagate demo`. The lab never touches
the host's own interfaces: everything it makes carries a unique prefix and is removed by close().
"""
