package flow

import (
	"strings"
)

// closest returns the candidate nearest to s in edit distance, when it is
// near enough to be a likely misspelling (at most a third of its length,
// and at least 1); otherwise "".
func closest(s string, candidates []string) string {
	best, bestDist := "", -1
	if len(s) > 100 {
		return ""
	}
	ls := strings.ToLower(s)
	for _, c := range candidates {
		d := editDistance(ls, strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	limit := max(1, len([]rune(s))/3)
	if bestDist < 0 || bestDist > limit {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in characters.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// suggestHint is "did you mean `x`?" when a candidate is close to s, else
// "use one of: a, b, c" (or "" when there are no candidates).
func suggestHint(s string, candidates []string) string {
	if c := closest(s, candidates); c != "" {
		return "did you mean `" + c + "`?"
	}
	if len(candidates) == 0 {
		return ""
	}
	return "use one of: " + strings.Join(candidates, ", ")
}
