#!/usr/bin/perl
# Write a MaxMind DB (.mmdb) test database from a JSON description, with
# Debian's libmaxmind-db-writer-perl:
#
#   mkmmdb.pl OUT.mmdb SPEC.json
#
# SPEC: {"ip_version": 4|6, "database_type": "...", "build_epoch": N,
#        "networks": [["CIDR", {record}], ...]}
#        "random_v4_24": {"count": N, "seed": S, "countries": [...]}}
# (random_v4_24, for benchmarks: N random IPv4 /24 networks, each with a
# Country-shaped record of one of the countries in turn.)
# Records are GeoIP2-shaped maps (country/continent/city/location/
# subdivisions/autonomous_system_*); the key types are fixed below.
use strict;
use warnings;

use JSON::PP;
use MaxMind::DB::Writer::Tree;

my ($out, $spec_file) = @ARGV;
die "usage: $0 OUT.mmdb SPEC.json\n" unless $out && $spec_file;

open my $in, '<', $spec_file or die "$spec_file: $!\n";
my $spec = decode_json(do { local $/; <$in> });
close $in;

my %types = (
    country                        => 'map',
    registered_country             => 'map',
    continent                      => 'map',
    city                           => 'map',
    postal                         => 'map',
    location                       => 'map',
    names                          => 'map',
    subdivisions                   => [ 'array', 'map' ],
    iso_code                       => 'utf8_string',
    code                           => 'utf8_string',
    en                             => 'utf8_string',
    fr                             => 'utf8_string',
    de                             => 'utf8_string',
    time_zone                      => 'utf8_string',
    geoname_id                     => 'uint32',
    latitude                       => 'double',
    longitude                      => 'double',
    accuracy_radius                => 'uint16',
    is_in_european_union           => 'boolean',
    autonomous_system_number       => 'uint32',
    autonomous_system_organization => 'utf8_string',
);

my $ipv = $spec->{ip_version} // 6;
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version               => $ipv,
    record_size              => $spec->{record_size} // 28,
    database_type            => $spec->{database_type} // 'W4A-Test',
    languages                => ['en'],
    description              => { en => 'w4a-httpd test database' },
    map_key_type_callback    => sub { $types{ $_[0] } // die "no type for key $_[0]\n" },
    # The tests use loopback and documentation ranges.
    remove_reserved_networks => 0,
    alias_ipv6_to_ipv4       => ($ipv == 6 ? 1 : 0),
);
$tree->_set_build_epoch($spec->{build_epoch}) if $spec->{build_epoch};

if (my $r = $spec->{random_v4_24}) {
    my @cc = @{ $r->{countries} };
    my %rec = map {
        $_ => { country   => { iso_code => $_, names => { en => "Country $_" } },
                continent => { code => 'EU' } }
    } @cc;
    srand($r->{seed} // 42);
    for my $i (1 .. $r->{count}) {
        my $net = sprintf('%d.%d.%d.0/24', 1 + int(rand(222)), int(rand(256)),
                          int(rand(256)));
        $tree->insert_network($net, $rec{ $cc[ $i % @cc ] });
    }
}

# The fixed networks last: they win over random ones they overlap.
for my $n (@{ $spec->{networks} // [] }) {
    my ($cidr, $record) = @$n;
    # JSON::PP gives booleans as objects: the writer wants 0/1.
    _fix_bools($record);
    $tree->insert_network($cidr, $record);
}

my $tmp = "$out.tmp.$$";
open my $fh, '>:raw', $tmp or die "$tmp: $!\n";
$tree->write_tree($fh);
close $fh or die "$tmp: $!\n";
rename $tmp, $out or die "rename $tmp $out: $!\n";

sub _fix_bools {
    my ($v) = @_;
    if (ref $v eq 'HASH') {
        for my $k (keys %$v) {
            if (JSON::PP::is_bool($v->{$k})) { $v->{$k} = $v->{$k} ? 1 : 0 }
            else { _fix_bools($v->{$k}) }
        }
    }
    elsif (ref $v eq 'ARRAY') {
        _fix_bools($_) for @$v;
    }
}
