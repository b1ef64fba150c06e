"""VMBus: ring buffers, GPADLs, the channel-management protocol over SynIC messages, the root-side
server that offers channels and the child-side bus enumerator (``vmbus.sys``/``vmbusr.sys``).
"""
