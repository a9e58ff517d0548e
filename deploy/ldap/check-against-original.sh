#!/usr/bin/env bash
# Checks that every attribute type and object class in our schema LDIF is defined
# exactly as in the original stepping stone schema (sst.schema, slapd.conf format):
# same OID, NAME, EQUALITY, ORDERING, SUBSTR, SYNTAX (with length), SINGLE-VALUE,
# SUP, kind, MUST and MAY. DESC may differ. Prints one line per mismatch and exits 1
# if there is any. A developer check, not run by the tests (they cannot assume the
# original file is at hand).
#
#   deploy/ldap/check-against-original.sh /path/to/sst.schema [our.ldif]
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 ORIGINAL_SST_SCHEMA [OUR_SCHEMA_LDIF]" >&2
	exit 2
fi
original=$1
ours=${2:-"$(dirname "$0")/stoney-conductor-schema.ldif"}
for f in "$original" "$ours"; do
	[ -r "$f" ] || { echo "cannot read $f" >&2; exit 2; }
done

exec perl -w - "$original" "$ours" <<'PERL'
use strict;

my ($original, $ours) = @ARGV;

sub slurp { my ($f) = @_; open(my $fh, '<', $f) or die "$f: $!\n"; local $/; my $t = <$fh>; close $fh; $t }

# Expands "macro:suffix" OIDs with the objectidentifier macros seen so far.
sub expand {
	my ($oid, $macros) = @_;
	if ($oid =~ /^([A-Za-z][\w-]*):(.+)$/ && exists $macros->{lc $1}) {
		return "$macros->{lc $1}.$2";
	}
	return exists $macros->{lc $oid} ? $macros->{lc $oid} : $oid;
}

# Splits a definition "( OID NAME 'x' ... )" into a hash of normalized fields.
sub fields {
	my ($def, $macros) = @_;
	$def =~ s/\s+/ /g;
	$def =~ s/^\s*\(\s*//;
	$def =~ s/\s*\)\s*$//;
	my %f;
	($f{OID}, $def) = split(/ /, $def, 2);
	$f{OID} = expand($f{OID}, $macros);
	$def = '' unless defined $def;
	$def =~ s/DESC\s+'(?:[^'\\]|\\.)*'//;    # DESC may differ
	if ($def =~ s/NAME\s+\(\s*([^)]*)\)//) { $f{NAME} = join(' ', map { lc } ($1 =~ /'([^']+)'/g)) }
	elsif ($def =~ s/NAME\s+'([^']+)'//)     { $f{NAME} = lc $1 }
	for my $k (qw(EQUALITY ORDERING SUBSTR SYNTAX SUP)) {
		$f{$k} = $1 if $def =~ s/\b$k\s+(\S+)//;
	}
	for my $k (qw(MUST MAY)) {
		if ($def =~ s/\b$k\s+\(([^)]*)\)//) { $f{$k} = join(' ', sort map { lc } grep { length } split(/[\s\$]+/, $1)) }
		elsif ($def =~ s/\b$k\s+(\S+)//)   { $f{$k} = lc $1 }
	}
	$f{'SINGLE-VALUE'} = 'yes' if $def =~ s/\bSINGLE-VALUE\b//;
	$f{KIND} = $1 if $def =~ s/\b(STRUCTURAL|AUXILIARY|ABSTRACT)\b//;
	$f{SUP} = lc $f{SUP} if defined $f{SUP};
	$f{REST} = join(' ', split(' ', $def)) if $def =~ /\S/;
	return \%f;
}

# Original: slapd.conf format, "#" comments, definitions span lines.
my (%orig, %omacros);
{
	my $text = slurp($original);
	$text =~ s/^\s*#.*$//mg;
	while ($text =~ /^\s*objectidentifier\s+(\S+)\s+(\S+)/mig) { $omacros{lc $1} = expand($2, \%omacros) }
	while ($text =~ /^\s*(attributetype|objectclass)\s*(\(.*?\))\s*(?=^\s*(?:attributetype|objectclass|objectidentifier)\b|\z)/msig) {
		my ($kind, $def) = (lc $1, $2);
		my $f = fields($def, \%omacros);
		$orig{"$kind " . (split(' ', $f->{NAME}))[0]} = $f;
	}
}

# Ours: LDIF, continuation lines start with one space.
my (@ours, %mmacros);
{
	my $text = slurp($ours);
	$text =~ s/\r?\n //g;
	for my $line (split(/\n/, $text)) {
		next if $line =~ /^#/;
		if ($line =~ /^olcObjectIdentifier:\s*(?:\{\d+\})?(\S+)\s+(\S+)/i) { $mmacros{lc $1} = expand($2, \%mmacros); next }
		next unless $line =~ /^olc(AttributeTypes|ObjectClasses):\s*(?:\{\d+\})?(.*)$/i;
		my $kind = lc($1) eq 'attributetypes' ? 'attributetype' : 'objectclass';
		push @ours, [$kind, fields($2, \%mmacros)];
	}
}

my ($checked, $bad) = (0, 0);
for my $d (@ours) {
	my ($kind, $f) = @$d;
	my $name = (split(' ', $f->{NAME} // '?'))[0];
	$checked++;
	my $o = $orig{"$kind $name"};
	unless ($o) { print "$kind $name: not in the original\n"; $bad++; next }
	for my $k (qw(OID NAME EQUALITY ORDERING SUBSTR SYNTAX SINGLE-VALUE SUP KIND MUST MAY REST)) {
		my ($a, $b) = ($f->{$k} // '-', $o->{$k} // '-');
		next if $a eq $b;
		print "$kind $name: $k is '$a', original has '$b'\n";
		$bad++;
	}
}
if ($checked == 0) { print "no definitions found in $ours\n"; exit 1 }
print "$checked definitions checked, $bad mismatches\n";
exit($bad ? 1 : 0);
PERL
