"""winhv: the Hyper-V hypercall ABI, the compiled hypercall bridge and the WinHv calling layer."""
