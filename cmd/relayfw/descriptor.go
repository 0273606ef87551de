package main

import "github.com/relayfw/relayfw/host"

// warnDescriptors warns, for each exit instance whose server descriptor
// would be too large for tor's directory authorities, how large and what
// merging its ExitPolicy entries would save (exitpolicy.Descriptor).
// policy, print and apply say it; stdout stays as it is.
func warnDescriptors(g *globals, insts []*host.Instance) {
	for _, t := range insts {
		if !t.IsExit() {
			continue
		}
		if d := t.Effective.Descriptor(t.Options); d.Over() {
			g.log.Warn(t.Describe() + ": " + d.String())
		}
	}
}
