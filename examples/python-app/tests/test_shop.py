import unittest

from app.shop import Cart


class CartTest(unittest.TestCase):
    def test_empty_cart_costs_nothing(self):
        self.assertEqual(Cart().total(), 0)

    def test_quantities_add_up(self):
        cart = Cart()
        cart.add("apple", 0.5, 3)
        cart.add("apple", 0.5)
        self.assertEqual(cart.total(), 2.0)

    def test_discount(self):
        cart = Cart()
        cart.add("book", 20)
        self.assertEqual(cart.total(discount_percent=25), 15.0)

    def test_bad_input_is_refused(self):
        with self.assertRaises(ValueError):
            Cart().add("x", -1)

    @unittest.skip("currency conversion is not written yet")
    def test_currency(self):
        pass
