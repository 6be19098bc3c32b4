from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidValue
from statebus.identity.keys import (
    ROOT_PATH,
    Identity,
    derive,
    identity_from_mnemonic,
    new_mnemonic,
    normalize_phrase,
    parse_path,
    seed_from_mnemonic,
    verify_signature,
)
from statebus.keys import is_pubkey

# SLIP-0010, "Test vector 1 for ed25519" and "Test vector 2 for ed25519":
# (path, chain code, private key)
VECTOR_1_SEED = "000102030405060708090a0b0c0d0e0f"
VECTOR_1 = [
    (
        "m",
        "90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb",
        "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7",
    ),
    (
        "m/0'",
        "8b59aa11380b624e81507a27fedda59fea6d0b779a778918a2fd3590e16e9c69",
        "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3",
    ),
    (
        "m/0'/1'",
        "a320425f77d1b5c2505a6b1b27382b37368ee640e3557c315416801243552f14",
        "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2",
    ),
    (
        "m/0'/1'/2'",
        "2e69929e00b5ab250f49c3fb1c12f252de4fed2c1db88387094a0f8c4c9ccd6c",
        "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9",
    ),
    (
        "m/0'/1'/2'/2'",
        "8f6d87f93d750e0efccda017d662a1b31a266e4a6f5993b15f5c1f07f74dd5cc",
        "30d1dc7e5fc04c31219ab25a27ae00b50f6fd66622f6e9c913253d6511d1e662",
    ),
    (
        "m/0'/1'/2'/2'/1000000000'",
        "68789923a0cac2cd5a29172a475fe9e0fb14cd6adb5ad98a3fa70333e7afa230",
        "8f94d394a8e8fd6b1bc2f3f49f5c47e385281d5c17e65324b0f62483e37e8793",
    ),
]
VECTOR_2_SEED = (
    "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a2"
    "9f9c999693908d8a8784817e7b7875726f6c696663605d5a5754514e4b484542"
)
VECTOR_2 = [
    (
        "m",
        "ef70a74db9c3a5af931b5fe73ed8e1a53464133654fd55e7a66f8570b8e33c3b",
        "171cb88b1b3c1db25add599712e36245d75bc65a1a5c9e18d76f9f2b1eab4012",
    ),
    (
        "m/0'",
        "0b78a3226f915c082bf118f83618a618ab6dec793752624cbeb622acb562862d",
        "1559eb2bbec5790b0c65d8693e4d0875b1747f4970ae8b650486ed7470845635",
    ),
    (
        "m/0'/2147483647'",
        "138f0b2551bcafeca6ff2aa88ba8ed0ed8de070841f0c4ef0165df8181eaad7f",
        "ea4f5bfe8694d8bb74b7b59404632fd5968b774ed545e810de9c32a4fb4192f4",
    ),
    (
        "m/0'/2147483647'/1'",
        "73bd9fff1cfbde33a1b846c27085f711c0fe2d66fd32e139d3ebc28e5a4a6b90",
        "3757c7577170179c7868353ada796c839135b3d30554bbb74a4b1e4a5a58505c",
    ),
    (
        "m/0'/2147483647'/1'/2147483646'",
        "0902fe8a29f9140480a00ef244bd183e8a13288e4412d8389d140aac1794825a",
        "5837736c89570de861ebc173b1086da4f505d4adb387c6a1b1342d5e4ac9ec72",
    ),
    (
        "m/0'/2147483647'/1'/2147483646'/2'",
        "5d70af781f3a37b829f0d060924d5e960bdc02e85423494afc0b1a41bbe196d4",
        "551d333177df541ad876a60ea71f00447931c0a9da16f227c11ea080d7391b8d",
    ),
]
# The SLIP-0010 vector 1 public key of m (00 prefix dropped).
VECTOR_1_MASTER_PUB = "a4b2856bfec510abab89753fac1ac0e1112364e7d250545963f135f2a33188ed"


@pytest.mark.parametrize(
    ("seed", "path", "chain", "secret"),
    [(VECTOR_1_SEED, *v) for v in VECTOR_1] + [(VECTOR_2_SEED, *v) for v in VECTOR_2],
)
def test_slip10_vectors(seed: str, path: str, chain: str, secret: str) -> None:
    ident = derive(bytes.fromhex(seed), path)
    got_secret, got_chain = ident.export_secret()
    assert got_secret.hex() == secret
    assert got_chain is not None and got_chain.hex() == chain


def test_slip10_master_public_key() -> None:
    assert derive(bytes.fromhex(VECTOR_1_SEED), "m").public_bytes.hex() == VECTOR_1_MASTER_PUB


def test_relative_derivation_matches_absolute() -> None:
    seed = bytes.fromhex(VECTOR_1_SEED)
    parent = derive(seed, "m/0'/1'")
    child = derive(parent, "2'/2'/1000000000'")
    assert child.export_secret()[0].hex() == VECTOR_1[-1][2]
    assert child.path == "m/0'/1'/2'/2'/1000000000'"


def test_bip39_round_trip_and_recovery() -> None:
    phrase = new_mnemonic()
    assert len(phrase.split()) == 24
    a = identity_from_mnemonic(phrase)
    b = identity_from_mnemonic("  " + phrase.upper().replace(" ", "   ") + "\n")
    assert a.pubkey == b.pubkey and is_pubkey(a.pubkey)
    assert a.path == ROOT_PATH
    assert identity_from_mnemonic(phrase, "other passphrase").pubkey != a.pubkey


def test_bip39_official_seed_vector() -> None:
    # BIP39 reference vector (entropy 00…00, passphrase "TREZOR").
    phrase = " ".join(["abandon"] * 11 + ["about"])
    assert seed_from_mnemonic(phrase, "TREZOR").hex() == (
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
    )


def test_wrong_phrase_rejected_without_echoing_words() -> None:
    words = new_mnemonic().split()
    with pytest.raises(InvalidValue, match="word 3 is not in the BIP39") as exc:
        normalize_phrase(" ".join([*words[:2], "zebrafish", *words[3:]]))
    assert "zebrafish" not in str(exc.value)
    with pytest.raises(InvalidValue, match=r"12, 15, 18, 21 or 24 words, not 23"):
        identity_from_mnemonic(" ".join(words[:23]))
    with pytest.raises(InvalidValue, match="checksum"):
        identity_from_mnemonic(" ".join(["abandon"] * 12))
    with pytest.raises(InvalidValue, match="checksum"):
        identity_from_mnemonic(" ".join(["zoo"] * 24))


def test_labels_are_deterministic_and_distinct() -> None:
    root = identity_from_mnemonic(" ".join(["abandon"] * 11 + ["about"]))
    laptop = derive(root, "device/laptop")
    assert laptop.pubkey == derive(root, "device/laptop").pubkey
    assert laptop.pubkey != derive(root, "device/phone").pubkey != root.pubkey
    # a label from the seed is relative to the namespace root
    seed = seed_from_mnemonic(" ".join(["abandon"] * 11 + ["about"]))
    assert derive(seed, "device/laptop").pubkey == laptop.pubkey
    assert derive(laptop, "app/chirp").can_derive


@pytest.mark.parametrize("path", ["m/0", "5", "a b", "m/0'/x y", "", "m/2147483648'", "device/m", "m/m"])
def test_bad_paths(path: str) -> None:
    with pytest.raises(InvalidValue):
        parse_path(path)


def test_derive_needs_chain_code_and_seed_size() -> None:
    with pytest.raises(InvalidValue, match="chain code"):
        derive(Identity.generate(), "0'")
    with pytest.raises(InvalidValue, match="seed"):
        derive(b"short", "m/0'")
    with pytest.raises(InvalidValue, match="absolute"):
        derive(derive(bytes(32), "m"), "m/0'")


def test_secret_never_in_repr_or_pickle() -> None:
    ident = derive(bytes.fromhex(VECTOR_1_SEED), "m/0'")
    secret, chain = ident.export_secret()
    assert chain is not None
    for text in (repr(ident), str(ident), f"{ident}", repr([ident])):
        assert secret.hex() not in text and chain.hex() not in text
        assert ident.pubkey in text
    with pytest.raises(TypeError):
        pickle.dumps(ident)


def test_sign_and_verify() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"hello")
    assert len(sig) == 64
    assert verify_signature(ident.pubkey, b"hello", sig)
    assert not verify_signature(ident.pubkey, b"hellO", sig)
    assert not verify_signature(Identity.generate().pubkey, b"hello", sig)
    assert not verify_signature(ident.pubkey, b"hello", sig[:63])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.from_regex(r"[a-z][a-z0-9._-]{0,11}", fullmatch=True).filter(lambda s: s != "m"),
        min_size=1,
        max_size=4,
    )
)
def test_label_paths_deterministic(labels: list[str]) -> None:
    seed = bytes(range(32))
    path = "/".join(labels)
    a, b = derive(seed, path), derive(seed, path)
    assert a.pubkey == b.pubkey and a.path == b.path
    assert a.path is not None and a.path.startswith(ROOT_PATH + "/")
