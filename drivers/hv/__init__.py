"""The hypervisor core: partitions, guest physical memory, virtual processors, the SynIC, ports
and connections, the hypercall handlers and the deterministic scheduler (Hyper-V's ``hvix64``).
"""
