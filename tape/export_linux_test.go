//go:build linux

package tape

// Test hooks for the st driver's system-call boundary (st_test.go).
type (
	STSys = stSys
	MTOp  = mtop
	MTGet = mtget
)

var OpenSTWith = openST

const (
	MTFSF, MTBSR, MTWEOF, MTREW, MTOFFL, MTEOM, MTSETBLK, MTWEOFI   = mtFSF, mtBSR, mtWEOF, mtREW, mtOFFL, mtEOM, mtSETBLK, mtWEOFI
	GMTEOF, GMTBOT, GMTEOT, GMTEOD, GMTWRPROT, GMTONLINE, GMTDROPEN = gmtEOF, gmtBOT, gmtEOT, gmtEOD, gmtWRPROT, gmtONLINE, gmtDROPEN
)

var MTIOCTOP, MTIOCGET = &mtIOCTOP, &mtIOCGET
