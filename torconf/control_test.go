package torconf

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestControlOptions: where tor's controllers connect and where the
// cookie lies, as tor reads the lines (Debian's defaults file first).
func TestControlOptions(t *testing.T) {
	const debian = "ControlSocket /run/tor/control GroupWritable RelaxDirModeCheck\nControlSocketsGroupWritable 1\n" +
		"CookieAuthentication 1\nCookieAuthFileGroupReadable 1\nCookieAuthFile /run/tor/control.authcookie\n"
	tests := []struct {
		name, defaults, torrc string
		sockets               []string
		off, cookie           bool
		cookieFile            string
		controlPorts          []string
	}{
		{"none", "", "ORPort 9001\n", nil, false, false, "", nil},
		{"debian", debian, "ORPort 9001\n", []string{"/run/tor/control"}, false, true, "/run/tor/control.authcookie", nil},
		{"relayor: ControlSocket 0", debian, "ControlSocket 0\n", nil, true, true, "/run/tor/control.authcookie", nil},
		{"the torrc's socket replaces the defaults'", debian, "ControlSocket /run/tor/other\n", []string{"/run/tor/other"}, false, true, "/run/tor/control.authcookie", nil},
		{"+ appends", debian, "+ControlSocket /run/tor/other\n", []string{"/run/tor/control", "/run/tor/other"}, false, true, "/run/tor/control.authcookie", nil},
		{"unix: prefix", "", "ControlSocket unix:/run/x/control\n", []string{"/run/x/control"}, false, false, "", nil},
		{"quoted", "", "ControlSocket unix:\"/run/a b/control\" GroupWritable\n", []string{"/run/a b/control"}, false, false, "", nil},
		{"ControlPort unix", "", "ControlPort unix:/run/y/control\nCookieAuthentication 1\n", []string{"/run/y/control"}, false, true, "", nil},
		{"ControlPort TCP", "", "ControlPort 9051\nControlPort 127.0.0.2:9052\nCookieAuthentication 1\n", nil, false, true, "", []string{"9051", "127.0.0.2:9052"}},
		{"ControlPort 0", "", "ControlPort 0\n", nil, false, false, "", nil},
		{"cookie off again", debian, "CookieAuthentication 0\n", []string{"/run/tor/control"}, false, false, "/run/tor/control.authcookie", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := optionsOf(t, tt.defaults, tt.torrc)
			var ports []string
			for _, p := range o.Ports {
				if p.Kind != "ControlPort" {
					continue
				}
				s := p.Port
				if p.Addr.IsValid() {
					s = p.Addr.String() + ":" + p.Port
				}
				ports = append(ports, s)
			}
			if diff := cmp.Diff(tt.sockets, o.ControlSockets); diff != "" {
				t.Errorf("ControlSockets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.controlPorts, ports); diff != "" {
				t.Errorf("control ports (-want +got):\n%s", diff)
			}
			if o.ControlSocketOff != tt.off || o.CookieAuthentication != tt.cookie || o.CookieAuthFile != tt.cookieFile {
				t.Errorf("off %v, cookie %v %q; want %v, %v %q", o.ControlSocketOff, o.CookieAuthentication, o.CookieAuthFile, tt.off, tt.cookie, tt.cookieFile)
			}
		})
	}
}
