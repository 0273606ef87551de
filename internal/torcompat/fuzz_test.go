package torcompat

import "testing"

func FuzzTorInetPton6(f *testing.F) {
	for _, s := range []string{"::", "::1", "2001:db8::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "1::2::3", "0x1::", "fe80::1:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := InetPton6(s)
		if !ok {
			return
		}
		printed := InetNtop6(a.As16())
		b, ok := InetPton6(printed)
		if !ok || b != a {
			t.Fatalf("%q -> %s does not parse back (%v %v)", s, printed, b, ok)
		}
	})
}
