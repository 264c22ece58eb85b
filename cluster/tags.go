package cluster

import (
	"slices"
	"strconv"
)

// LowestTag returns the lowest value that the gossip tag tag holds among the members ids (a
// positive integer, such as the log format a node reads), capped at max, and the first of ids
// holding it ("" when none is below max). A member gossip does not know, or whose tag is absent or
// not a positive integer (a node of a release from before the tag), counts as 0. No ids, or
// gossip shut down: 0 and "". The region's and governance's log-format gates are both this, over
// their own voters.
func (c *Cluster) LowestTag(ids []string, tag string, max int) (int, string) {
	if len(ids) == 0 {
		return 0, ""
	}
	members, err := c.Members()
	if err != nil {
		return 0, ""
	}
	low, who := max, ""
	for _, id := range ids {
		f := 0
		if i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id }); i >= 0 {
			if v, err := strconv.Atoi(members[i].Meta[tag]); err == nil && v > 0 {
				f = v
			}
		}
		if f < low {
			low, who = f, id
		}
	}
	return low, who
}
