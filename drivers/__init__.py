"""The hypervisor and everything that runs on it: the core (partitions, memory, SynIC, ports),
VMBus (rings, GPADLs, the channel protocol, the bus enumerator), VID, VMMS and the VM workers.

Imported as ``winhv.drivers``. It talks to the layer below (``winhv``) only through the bridge
and the ABI tables; nothing here imports ``winhv.plugins`` or ``winhv.vsp_vsc_pairs``.
"""
