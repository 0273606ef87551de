package digits

import (
	"math"
	"testing"
)

func TestGrouped(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{Grouped(0), "0"},
		{Grouped(999), "999"},
		{Grouped(1000), "1,000"},
		{Grouped(9000), "9,000"},
		{Grouped(50000), "50,000"},
		{Grouped(262144), "262,144"},
		{Grouped(1234567), "1,234,567"},
		{Grouped(uint64(1234567)), "1,234,567"},
		{Grouped(1233078), "1,233,078"},
		{Grouped(-20000), "-20,000"},
		{Grouped(-999), "-999"},
		{Grouped(int64(-123456)), "-123,456"},
		{Grouped(uint64(math.MaxUint64)), "18,446,744,073,709,551,615"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
