/**
 * @file mt_cosine_factor_q15.c
 * @brief Cosine lr factor (1 + cos(pi * min(t, T) / T)) / 2 as Q15 by table lookup and linear
 *        interpolation; bit-exact with train_int.cosine_factor_q15 (table = COS_TABLE_Q15,
 *        514 bytes of flash; checked equal by tests/test_c_kernels_train.py).
 */
#include "mt_kernels_train.h"

const uint16_t mt_cos_table_q15[MT_COS_TABLE_SIZE] = {
    32768u, 32767u, 32763u, 32757u, 32748u, 32737u, 32724u, 32708u, 32689u, 32668u, 32645u, 32619u,
    32591u, 32560u, 32527u, 32491u, 32453u, 32413u, 32370u, 32325u, 32277u, 32227u, 32175u, 32120u,
    32063u, 32003u, 31941u, 31877u, 31810u, 31741u, 31670u, 31597u, 31521u, 31443u, 31362u, 31280u,
    31195u, 31108u, 31019u, 30927u, 30833u, 30738u, 30640u, 30539u, 30437u, 30333u, 30226u, 30117u,
    30007u, 29894u, 29779u, 29663u, 29544u, 29423u, 29300u, 29176u, 29049u, 28921u, 28790u, 28658u,
    28524u, 28388u, 28250u, 28111u, 27969u, 27826u, 27681u, 27535u, 27387u, 27237u, 27086u, 26933u,
    26778u, 26622u, 26464u, 26305u, 26144u, 25982u, 25818u, 25653u, 25486u, 25319u, 25149u, 24979u,
    24807u, 24634u, 24460u, 24284u, 24107u, 23929u, 23750u, 23570u, 23389u, 23207u, 23023u, 22839u,
    22654u, 22468u, 22281u, 22092u, 21904u, 21714u, 21523u, 21332u, 21140u, 20947u, 20754u, 20560u,
    20365u, 20170u, 19974u, 19777u, 19580u, 19383u, 19185u, 18987u, 18788u, 18589u, 18390u, 18190u,
    17990u, 17790u, 17589u, 17389u, 17188u, 16987u, 16786u, 16585u, 16384u, 16183u, 15982u, 15781u,
    15580u, 15379u, 15179u, 14978u, 14778u, 14578u, 14378u, 14179u, 13980u, 13781u, 13583u, 13385u,
    13188u, 12991u, 12794u, 12598u, 12403u, 12208u, 12014u, 11821u, 11628u, 11436u, 11245u, 11054u,
    10864u, 10676u, 10487u, 10300u, 10114u, 9929u, 9745u, 9561u, 9379u, 9198u, 9018u, 8839u,
    8661u, 8484u, 8308u, 8134u, 7961u, 7789u, 7619u, 7449u, 7282u, 7115u, 6950u, 6786u,
    6624u, 6463u, 6304u, 6146u, 5990u, 5835u, 5682u, 5531u, 5381u, 5233u, 5087u, 4942u,
    4799u, 4657u, 4518u, 4380u, 4244u, 4110u, 3978u, 3847u, 3719u, 3592u, 3468u, 3345u,
    3224u, 3105u, 2989u, 2874u, 2761u, 2651u, 2542u, 2435u, 2331u, 2229u, 2128u, 2030u,
    1935u, 1841u, 1749u, 1660u, 1573u, 1488u, 1406u, 1325u, 1247u, 1171u, 1098u, 1027u,
    958u, 891u, 827u, 765u, 705u, 648u, 593u, 541u, 491u, 443u, 398u, 355u,
    315u, 277u, 241u, 208u, 177u, 149u, 123u, 100u, 79u, 60u, 44u, 31u,
    20u, 11u, 5u, 1u, 0u
};

int32_t mt_cosine_factor_q15(int32_t t, int32_t total)
{
    const int32_t tt = (t < total) ? t : total;
    const int32_t num = tt * (MT_COS_TABLE_SIZE - 1);
    const int32_t i = num / total, rem = num % total;
    const int32_t a = (int32_t)mt_cos_table_q15[i];
    if (i == MT_COS_TABLE_SIZE - 1) {
        return a;
    }
    return a - ((a - (int32_t)mt_cos_table_q15[i + 1]) * rem) / total;
}
